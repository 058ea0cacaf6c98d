package aws

import (
	"io"
	"net/http"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
)

// plainBodyClient works around aws/aws-sdk-go-v2#2737: smithy-go wraps
// request bodies in a reader whose WriteTo returns io.EOF once the SDK has
// closed it, which the SDK does as soon as the response headers arrive.
// When a fast server answers before net/http has finished its final
// read-to-EOF of the request body, net/http takes that io.EOF for a failed
// write and closes the connection under the response still being read:
// "use of closed network connection". Hiding WriteTo makes that last read
// an ordinary Read, which reports a plain end of body.
type plainBodyClient struct {
	next awssdk.HTTPClient
}

func (c plainBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = plainBody{req.Body}
	}
	return c.next.Do(req)
}

// plainBody is a request body with only Read and Close.
type plainBody struct{ rc io.ReadCloser }

func (b plainBody) Read(p []byte) (int, error) { return b.rc.Read(p) }
func (b plainBody) Close() error               { return b.rc.Close() }
