package api

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/ui/apidocs"
)

// docsCSP keeps the documentation page to its own origin: its scripts and
// styles are embedded files (Swagger UI sets inline styles, hence
// 'unsafe-inline' for styles only), and it talks to this API alone.
const docsCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// docAsset is an embedded file ready to serve.
type docAsset struct {
	body, gzipped []byte
	contentType   string
	etag          string
}

var (
	docsOnce   sync.Once
	docsAssets map[string]*docAsset
)

// loadDocs reads and compresses the embedded files once.
func loadDocs() map[string]*docAsset {
	docsOnce.Do(func() {
		docsAssets = map[string]*docAsset{}
		fsys := apidocs.FS()
		for _, name := range append(apidocs.Assets(), apidocs.IndexFile) {
			body, err := fs.ReadFile(fsys, name)
			if err != nil {
				panic("api: embedded docs asset " + name + ": " + err.Error())
			}
			ct := mime.TypeByExtension(path.Ext(name))
			if ct == "" || name == "LICENSE" || name == "NOTICE" {
				ct = "text/plain; charset=utf-8"
			}
			sum := sha256.Sum256(body)
			a := &docAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
			if len(body) > 1024 && !strings.HasPrefix(ct, "image/") {
				var buf bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
				_, _ = zw.Write(body)
				_ = zw.Close()
				a.gzipped = buf.Bytes()
			}
			docsAssets[name] = a
		}
	})
	return docsAssets
}

// docsAssetNames lists the assets of the page (for the document).
func docsAssetNames() []string { return apidocs.Assets() }

func (s *Server) docsPage(c echo.Context) error {
	return serveDocAsset(c, apidocs.IndexFile, "no-cache")
}

func (s *Server) docsAsset(c echo.Context) error {
	name := c.Param("asset")
	if name == apidocs.IndexFile {
		return NewProblem(http.StatusNotFound, CodeNotFound, "The page is at /api/docs.")
	}
	return serveDocAsset(c, name, "public, max-age=3600")
}

func serveDocAsset(c echo.Context, name, cacheControl string) error {
	a, ok := loadDocs()[name]
	if !ok {
		return NewProblem(http.StatusNotFound, CodeNotFound, "No such documentation asset.")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, cacheControl)
	h.Set("ETag", a.etag)
	h.Set("Content-Security-Policy", docsCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Add("Vary", echo.HeaderAcceptEncoding)
	if match := c.Request().Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	body := a.body
	if a.gzipped != nil && acceptsGzip(c.Request()) {
		h.Set(echo.HeaderContentEncoding, "gzip")
		body = a.gzipped
	}
	return c.Blob(http.StatusOK, a.contentType, body)
}

func acceptsGzip(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get(echo.HeaderAcceptEncoding), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(strings.ReplaceAll(q, " ", "")) != "q=0" {
			return true
		}
	}
	return false
}
