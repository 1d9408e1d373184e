package devidp_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tetherhq/tether/internal/devidp"
)

// The IdP must know its BaseURL before it is created, and the server
// must be listening before the IdP can serve. An unstarted httptest
// server solves both: its listener (and so its address) exists at once,
// and its handler is set before Start. In the broker, mount the handler
// on the broker's own mux at the BaseURL's path, without stripping it.
func Example() {
	srv := httptest.NewUnstartedServer(nil)
	idp, err := devidp.New(devidp.Options{
		BaseURL: "http://" + srv.Listener.Addr().String() + "/dev/idp",
		Issuers: []devidp.IssuerSpec{{
			Name:      "vendor",
			ClientIDs: []string{"tether-cli"},
			Users:     []devidp.User{{Email: "ada@vendor.test", Groups: []string{"eng"}}},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dev/idp/", idp.Handler())
	srv.Config.Handler = mux
	srv.Start()
	defer srv.Close()

	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, idp.IssuerURL("vendor"))
	if err != nil {
		log.Fatal(err)
	}
	raw, err := idp.Token("vendor", "ada@vendor.test", "tether-cli", "")
	if err != nil {
		log.Fatal(err)
	}
	tok, err := provider.Verifier(&oidc.Config{ClientID: "tether-cli"}).Verify(ctx, raw)
	if err != nil {
		log.Fatal(err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if err := tok.Claims(&claims); err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Subject, claims.Email, claims.Groups)
	// Output: dev|ada@vendor.test ada@vendor.test [eng]
}
