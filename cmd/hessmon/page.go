package main

import (
	"net"
	"net/http"

	"github.com/hessmon/hessmon/monitor/web"
)

// withPage serves the live page (monitor/web) at / and its files under
// /static/, and everything else (/metrics, /api/, /healthz) from api.
func withPage(api http.Handler) http.Handler {
	page := web.Handler()
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("/{$}", page) // all methods: the page answers 405 to all but GET and HEAD
	mux.Handle("/static/", page)
	return mux
}

// pageURL is the live page's address on ln.
func pageURL(ln net.Listener) string { return "http://" + ln.Addr().String() + "/" }
