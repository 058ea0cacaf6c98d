// Package apidocs holds the interactive API documentation page: Swagger UI
// (swagger-ui-dist, see README.md) and the page that loads it with the
// service's OpenAPI document. The files are embedded, so the page works
// offline and never loads anything from a CDN.
package apidocs

import (
	"embed"
	"io/fs"
	"slices"
)

// IndexFile is the page itself; the other files are its assets.
const IndexFile = "index.html"

//go:embed index.html init.js swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt
var files embed.FS

// FS returns the page and its assets, all at the root.
func FS() fs.FS { return files }

// Assets lists the files the page loads or that accompany them (licences),
// sorted, without the page itself.
func Assets() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // the embedded root always exists
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && e.Name() != IndexFile {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}
