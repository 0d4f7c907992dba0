package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
)

// statusOf is the one place where an error becomes an HTTP status.
func statusOf(code berth.ErrorCode) int {
	switch code {
	case berth.EInvalid:
		return http.StatusBadRequest
	case berth.ENotFound, berth.EUnknownType:
		return http.StatusNotFound
	case berth.EExhausted, berth.EConflict:
		return http.StatusConflict
	case berth.ELeaseLost:
		return http.StatusGone
	case berth.ETooLarge:
		return http.StatusRequestEntityTooLarge
	case berth.EUnauthenticated:
		return http.StatusUnauthorized
	case berth.EForbidden:
		return http.StatusForbidden
	case berth.EMethod:
		return http.StatusMethodNotAllowed
	case berth.EUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type errorBody struct {
	Error *berth.Error `json:"error"`
}

// writeError answers with the JSON error shape. Store failures are 503 so
// that clients retry them; they are logged with their cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client has gone; nobody reads an answer
	}
	var be *berth.Error
	var se *lease.StoreError
	switch {
	case errors.As(err, &be):
	case errors.As(err, &se):
		s.logFrom(r.Context()).Error("store failure", "method", r.Method, "path", r.URL.Path, "err", err)
		be = &berth.Error{Code: berth.EUnavailable, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		// Not the caller's deadline: a bound inside berth (the store's
		// per-call timeout) ran out.
		s.logFrom(r.Context()).Error("store did not answer in time", "method", r.Method, "path", r.URL.Path, "err", err)
		be = &berth.Error{Code: berth.EUnavailable, Message: "store unavailable: no answer in time"}
	default:
		s.logFrom(r.Context()).Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		be = &berth.Error{Code: berth.EInternal, Message: "internal error; see the server log"}
	}
	noteError(w, be.Code)
	writeJSON(w, statusOf(be.Code), errorBody{Error: be})
}

// Logger is what the API logs through.
type Logger = *slog.Logger
