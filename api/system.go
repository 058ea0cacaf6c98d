package api

import (
	"net/http"
	"regexp"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// ProjectionList is GET /api/admin/projections.
type ProjectionList struct {
	Items []application.ProjectionStatus `json:"items"`
}

func (s *Server) systemHealth(c echo.Context) error {
	h, err := s.system.Health(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, h)
}

func (s *Server) listProjections(c echo.Context) error {
	items, err := s.admin.Projections(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, ProjectionList{Items: items})
}

// projectionNameRE is the form of a read model's name.
var projectionNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

func (s *Server) rebuildProjection(c echo.Context) error {
	name := c.Param("name")
	if !projectionNameRE.MatchString(name) {
		return invalid("name", "is not a read model name")
	}
	st, err := s.admin.RebuildProjection(c.Request().Context(), name)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/admin/projections")
	return c.JSON(http.StatusAccepted, st)
}
