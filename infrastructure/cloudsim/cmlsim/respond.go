package cmlsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// reply is an answer prepared under the controller's lock and written after.
type reply struct {
	status      int
	body        []byte
	contentType string
}

func jsonReply(status int, v any) reply {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value the simulator answers is made of maps, slices, strings
		// and numbers; failing here is a bug of this package.
		panic(fmt.Sprintf("cmlsim: marshal reply: %v", err))
	}
	return reply{status: status, body: b, contentType: "application/json"}
}

func noContent() reply { return reply{status: http.StatusNoContent} }

// errorReply is CML's error body {"code", "description"}.
func errorReply(status int, description string) reply {
	return jsonReply(status, map[string]any{"code": status, "description": description})
}

// validationReply is CML's 400 whose description is itself JSON text.
func validationReply(location []string, kind, message string) reply {
	desc, _ := json.Marshal(map[string]any{"Input validation failed": []any{
		map[string]any{"location": location, "type": kind, "message": message},
	}})
	return errorReply(http.StatusBadRequest, string(desc))
}

// nginxReply is the HTML page nginx answers with (413, 429, 502, 504).
func nginxReply(status int) reply {
	title := strconv.Itoa(status) + " " + http.StatusText(status)
	page := "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" + title +
		"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	return reply{status: status, body: []byte(page), contentType: "text/html"}
}

// faultReply is an injected failure of the given status.
func faultReply(status int) reply {
	switch status {
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return nginxReply(status)
	}
	return errorReply(status, http.StatusText(status))
}

func (rep reply) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Server", "nginx")
	if rep.contentType != "" {
		h.Set("Content-Type", rep.contentType)
	}
	if rep.body != nil {
		h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	}
	w.WriteHeader(rep.status)
	if rep.body != nil {
		_, _ = w.Write(rep.body)
	}
}

// bytesValue writes a byte count as CML does, as a float: 2791538688.0.
func bytesValue(v float64) json.Number {
	return json.Number(strconv.FormatFloat(v, 'f', 1, 64))
}
