// Package boskosclient drives berth's Boskos-compatible endpoints with the
// real Boskos Go client (sigs.k8s.io/boskos/client) against a real
// `berth serve` process. Its only code is tests.
package boskosclient
