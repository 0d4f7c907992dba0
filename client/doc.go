// Package client is the Go client of berth, the lease broker for shared CI
// test infrastructure. It speaks berth's native JSON API (under /v1/).
//
// # Leasing a resource
//
// Create one Client per process and share it; it is safe for concurrent
// use:
//
//	c, err := client.New(client.Options{Servers: []string{"http://berth-0:7420", "http://berth-1:7420"}})
//
// The simplest way to use a resource is Hold, which acquires one and keeps
// its lease alive with heartbeats in the background until you release it:
//
//	h, err := c.Hold(ctx, client.AcquireParams{Type: "gke-cluster", Owner: "job-1234", Wait: 10 * time.Minute}, client.HoldOptions{})
//	if err != nil {
//		return err // code berth.EExhausted if none became free in time
//	}
//	defer h.Close(context.WithoutCancel(ctx)) // release (to dirty) even if ctx was cancelled
//	endpoint := h.Resource().UserData["endpoint"]
//	select {
//	case err := <-runTests(ctx, endpoint):
//		return err
//	case err := <-h.Lost():
//		return fmt.Errorf("lost the cluster, not a test failure: %w", err)
//	}
//
// Acquire, Heartbeat and Release are the same steps one at a time, for
// callers that keep the lease alive themselves (a CI system that
// heartbeats from somewhere else, say).
//
// # Waiting
//
// With AcquireParams.Wait set, Acquire queues when no resource is free and
// long-polls the server with the same request id: the server hands over a
// resource the moment one is released, in order of priority and then of
// arrival. OnQueued reports the queue position while waiting. When the
// wait is over Acquire returns a *berth.Error with code berth.EExhausted;
// when it gives up (wait over or ctx ended) it withdraws its request from
// the queue.
//
// # Errors
//
// Every error the server answers is a *berth.Error, wrapped with the
// method and path of the call, so switch on its code:
//
//	switch berth.ErrorCodeOf(err) {
//	case berth.EExhausted: // nothing free in time
//	case berth.ELeaseLost: // the lease ended; stop using the resource
//	}
//
// # Retries and failover
//
// Each call is retried on connection errors (refused, reset, timed out,
// closed before an answer), on 5xx answers and on 429, never on other 4xx
// answers, up to Options.MaxAttempts times and for no longer than the
// call's context allows. The delay between attempts grows exponentially
// from Options.MinBackoff to at most Options.MaxBackoff with full jitter; a
// Retry-After header on a 429 or 503 is honoured, capped at MaxBackoff.
// Each retry goes to the next of Options.Servers, and the next call starts
// with the server that last answered. Every call the client makes is
// idempotent (an acquire always carries a request id), so a retry never
// takes a second resource.
//
// There is no overall HTTP timeout, which would cut long polls: each
// attempt has its own deadline, derived from the call's context and the
// time the server may hold the answer.
package client
