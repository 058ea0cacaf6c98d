package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
)

// SettingsUpdateRequest is the body of PUT /api/settings.
type SettingsUpdateRequest struct {
	Set   settings.Patch `json:"set,omitzero" doc:"Values to save; each then wins over the environment."`
	Clear []settings.Key `json:"clear,omitempty" doc:"Keys whose saved value is removed, so that they follow the environment again."`
}

func (s *Server) getSettings(c echo.Context) error {
	v, err := s.app.GetSettings(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) updateSettings(c echo.Context) error {
	var body SettingsUpdateRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return err
	}
	res, err := s.app.UpdateSettings(c.Request().Context(), body.Set, body.Clear)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
