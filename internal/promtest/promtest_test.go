package promtest

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

func TestStart(t *testing.T) {
	s := Start(t)
	s.WaitForSamples(t)
	res, err := http.Get(s.URL + "/api/v1/query?query=up")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `"job":"prometheus"`) {
		t.Errorf("up = %s, want the self-scrape", b)
	}
}
