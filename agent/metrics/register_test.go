package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandlerServesRegisteredRoutes(t *testing.T) {
	h := Handler(ServerConfig{Registry: prometheus.NewRegistry(), Ready: func() error { return nil },
		Register: func(mux *http.ServeMux) {
			mux.HandleFunc("GET /debug/flows", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "flows") })
		}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/flows", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "flows" {
		t.Errorf("GET /debug/flows = %d %q, want the registered route", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /healthz = %d after registering more routes", rec.Code)
	}
}
