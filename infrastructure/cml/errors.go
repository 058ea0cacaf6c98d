package cml

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"html"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// ErrCertificate is in the chain of every error caused by a TLS certificate
// that failed verification (verification is on: Options.TLSVerify or
// Options.CAFile). Retrying does not help; the CA bundle or the controller's
// certificate must change. Such errors are CloudErrors of kind CloudAuth
// with Code CertificateCode.
var ErrCertificate = errors.New("TLS certificate verification failed")

// CertificateCode is the Code of a CloudError caused by a certificate that
// failed verification.
const CertificateCode = "tls_certificate"

// maxMessage caps the length of an error message taken from a response.
const maxMessage = 512

// IsCertificateError reports whether err was caused by a TLS certificate
// that failed verification.
func IsCertificateError(err error) bool { return errors.Is(err, ErrCertificate) }

// kindOfStatus classifies an HTTP status of a CML controller (or the nginx in
// front of it).
func kindOfStatus(status int) application.CloudErrorKind {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return application.CloudAuth
	case http.StatusNotFound:
		return application.CloudNotFound
	case http.StatusConflict:
		return application.CloudConflict
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return application.CloudInvalid
	case http.StatusTooManyRequests:
		return application.CloudThrottled
	case http.StatusRequestTimeout:
		return application.CloudTimeout
	}
	if status >= 500 && status <= 599 {
		return application.CloudUnavailable
	}
	return application.CloudUnknown
}

// statusError turns a non-2xx response into a CloudError.
func statusError(op string, resp response) error {
	return &application.CloudError{
		Kind:    kindOfStatus(resp.status),
		Op:      op,
		Code:    strconv.Itoa(resp.status),
		Message: errorMessage(resp.status, resp.body),
	}
}

// transportError classifies a failure to exchange a request at all.
func transportError(op string, err error) error {
	ce := &application.CloudError{Kind: application.CloudUnavailable, Op: op, Err: err}
	var uerr *url.Error
	inner := err
	if errors.As(err, &uerr) {
		inner = uerr.Err
	}
	ce.Message = truncate(inner.Error())
	var netErr net.Error
	switch {
	case isCertificateFailure(err):
		ce.Kind, ce.Code = application.CloudAuth, CertificateCode
		ce.Message = ErrCertificate.Error() + ": " + ce.Message
		ce.Err = errors.Join(ErrCertificate, err)
	case errors.Is(err, context.DeadlineExceeded):
		ce.Kind = application.CloudTimeout
	case errors.Is(err, context.Canceled):
		// The caller gave up (shutdown, job timeout): retryable, like a
		// timeout, and errors.Is(err, context.Canceled) still holds.
		ce.Kind = application.CloudTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		ce.Kind = application.CloudTimeout
	}
	return ce
}

func isCertificateFailure(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var insecure x509.InsecureAlgorithmError
	var constraint x509.ConstraintViolationError
	return errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &host) ||
		errors.As(err, &invalid) || errors.As(err, &insecure) || errors.As(err, &constraint)
}

var (
	htmlTitle = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)
	htmlTag   = regexp.MustCompile(`(?s)<[^>]*>`)
)

// errorMessage extracts a readable message from an error body: CML's JSON
// {"code", "description"} where description is a string, an object or an
// array; or, from the nginx in front, an HTML page or plain text.
func errorMessage(status int, body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && (body[0] == '{' || body[0] == '[' || body[0] == '"') && json.Valid(body) {
		if msg := jsonErrorMessage(body); msg != "" {
			return truncate(msg)
		}
	}
	if len(body) > 0 && body[0] == '<' {
		text := ""
		if m := htmlTitle.FindSubmatch(body); m != nil {
			text = string(m[1])
		} else {
			text = string(htmlTag.ReplaceAll(body, []byte(" ")))
		}
		if text = strings.Join(strings.Fields(html.UnescapeString(text)), " "); text != "" {
			return truncate(text)
		}
	}
	if len(body) > 0 && utf8.Valid(body) {
		if text := strings.Join(strings.Fields(string(body)), " "); text != "" {
			return truncate(text)
		}
	}
	if text := http.StatusText(status); text != "" {
		return text
	}
	return "HTTP " + strconv.Itoa(status)
}

func jsonErrorMessage(body []byte) string {
	var s string
	if json.Unmarshal(body, &s) == nil {
		return strings.TrimSpace(s)
	}
	var doc struct {
		Description json.RawMessage `json:"description"`
		Detail      json.RawMessage `json:"detail"` // FastAPI's own validation errors
		Message     json.RawMessage `json:"message"`
	}
	if decodeObject(body, &doc) != nil {
		return compact(body)
	}
	for _, raw := range []json.RawMessage{doc.Description, doc.Detail, doc.Message} {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if json.Unmarshal(raw, &s) == nil {
			return strings.TrimSpace(s)
		}
		return compact(raw)
	}
	return compact(body)
}

func compact(raw []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

func truncate(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
