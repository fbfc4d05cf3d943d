// Package demo serves the hub's demo page: plain HTML and JavaScript,
// embedded in the binary, that use the hub's API from a browser.
package demo

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"strings"

	"github.com/likestripes/moitessier"
)

//go:embed static
var static embed.FS

// Handler serves the demo page and its files at "/".
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// Handlers returns the handler functions the page's Handler panel names, to
// put in moitessierhttp.Config.Handlers: "greet" writes each Handler
// listener's owner a line with their name, "upper" shouts.
func Handlers(hub *moitessier.Hub) map[string]moitessier.HandlerFunc {
	return map[string]moitessier.HandlerFunc{
		"greet": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			info, err := hub.Info(ctx, id)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Hello %s! %s says: %s", info.Person, m.Sender, m.Text), nil
		},
		"upper": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			return strings.ToUpper(m.Text), nil
		},
	}
}
