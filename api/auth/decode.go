package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/api"
)

// Limits of the credential fields.
const (
	maxUsernameLen = 256
	maxPasswordLen = 1024
)

// credentials are the body of POST /api/auth/login and /api/auth/token.
type credentials struct {
	Username string
	Password string
	// ReturnTo comes with the login form only.
	ReturnTo string
}

func badRequest(err error) error {
	return api.NewProblem(http.StatusBadRequest, api.CodeBadRequest, err.Error())
}

// readBody reads at most maxBodyBytes of the request body.
func readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, api.NewProblem(http.StatusRequestEntityTooLarge, api.CodeRequestTooLarge,
			fmt.Sprintf("The body exceeds %d bytes.", maxBodyBytes))
	}
	if err != nil {
		return nil, badRequest(fmt.Errorf("read body: %w", err))
	}
	return body, nil
}

// decodeCredentials reads {"username": "...", "password": "..."}: exactly
// one JSON object, no other fields, both members non-empty strings within
// their limits.
func decodeCredentials(body []byte) (credentials, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var in struct {
		Username *string `json:"username"`
		Password *string `json:"password"`
	}
	if err := dec.Decode(&in); err != nil {
		return credentials{}, fmt.Errorf("the body must be a JSON object with username and password: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return credentials{}, errors.New("the body must hold one JSON object and nothing after it")
	}
	var creds credentials
	if in.Username != nil {
		creds.Username = *in.Username
	}
	if in.Password != nil {
		creds.Password = *in.Password
	}
	return creds, creds.validate()
}

func (c credentials) validate() error {
	switch {
	case c.Username == "":
		return errors.New("username is required")
	case c.Password == "":
		return errors.New("password is required")
	case len(c.Username) > maxUsernameLen:
		return fmt.Errorf("username is longer than %d bytes", maxUsernameLen)
	case len(c.Password) > maxPasswordLen:
		return fmt.Errorf("password is longer than %d bytes", maxPasswordLen)
	}
	return nil
}

// decodeCredentialsForm reads the login form: username, password and an
// optional return_to, each at most once, nothing else.
func decodeCredentialsForm(body []byte) (credentials, error) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return credentials{}, fmt.Errorf("the form is not URL-encoded: %w", err)
	}
	var creds credentials
	for k, v := range values {
		if len(v) != 1 {
			return credentials{}, fmt.Errorf("form field %q must appear once", truncate(k, 32))
		}
		switch k {
		case "username":
			creds.Username = v[0]
		case "password":
			creds.Password = v[0]
		case "return_to":
			creds.ReturnTo = v[0]
		default:
			return credentials{}, fmt.Errorf("unknown form field %q", truncate(k, 32))
		}
	}
	return creds, creds.validate()
}

// decodeLogin reads POST /api/auth/login as JSON or as a form; form reports
// which.
func decodeLogin(c echo.Context) (creds credentials, form bool, err error) {
	var decode func([]byte) (credentials, error)
	switch mediaType(c.Request()) {
	case echo.MIMEApplicationJSON:
		decode = decodeCredentials
	case echo.MIMEApplicationForm:
		decode, form = decodeCredentialsForm, true
	default:
		return credentials{}, false, api.NewProblem(http.StatusUnsupportedMediaType, api.CodeUnsupportedMediaType,
			"Send application/json or application/x-www-form-urlencoded.")
	}
	body, err := readBody(c)
	if err != nil {
		return credentials{}, form, err
	}
	creds, err = decode(body)
	if err != nil {
		return credentials{}, form, badRequest(err)
	}
	return creds, form, nil
}
