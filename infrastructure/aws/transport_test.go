package aws

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// closeTracker is a request body with WriteTo, like smithy-go's.
type closeTracker struct {
	*bytes.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

type captureClient struct{ req *http.Request }

func (c *captureClient) Do(req *http.Request) (*http.Response, error) {
	c.req = req
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
}

func TestPlainBodyClientHidesWriteTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body io.ReadCloser
	}{
		{"a body with WriteTo", &closeTracker{Reader: bytes.NewReader([]byte("Action=DescribeInstances"))}},
		{"no body", nil},
		{"http.NoBody", http.NoBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := &captureClient{}
			req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/", nil)
			require.NoError(t, err)
			req.Body = tc.body
			resp, err := plainBodyClient{next: next}.Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			if tc.body == nil || tc.body == http.NoBody {
				require.Equal(t, tc.body, next.req.Body)
				return
			}
			_, hasWriteTo := next.req.Body.(io.WriterTo)
			require.False(t, hasWriteTo, "net/http must not see WriteTo")
			got, err := io.ReadAll(next.req.Body)
			require.NoError(t, err)
			require.Equal(t, "Action=DescribeInstances", string(got))
			require.NoError(t, next.req.Body.Close())
			require.True(t, tc.body.(*closeTracker).closed, "Close reaches the SDK's body")
		})
	}
}
