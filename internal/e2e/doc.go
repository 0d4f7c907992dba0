// Package e2e holds end-to-end tests that build the real berth binary, run
// it as a separate process on a loopback port, and drive it through the
// public client and CLI: crashes are real SIGKILLs, restarts are new
// processes on the same data directory.
package e2e
