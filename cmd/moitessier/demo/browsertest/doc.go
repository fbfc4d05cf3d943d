// Package browsertest drives the hub's demo page (package demo) in headless
// Chromium. It is a module of its own so that the browser driver it needs
// (chromedp) is not a requirement of the library module: a program that
// imports moitessier downloads none of it.
//
// The module builds against the library in this repository (see the
// replace directive in its go.mod); `make test` at the repository's root
// runs its tests after the library's.
package browsertest
