package berth

import (
	"errors"
	"fmt"
)

// ErrorCode classifies an Error. The HTTP layer maps each code to a status
// in exactly one place; clients switch on the code, never on the message.
type ErrorCode string

const (
	// EInvalid: the caller sent something malformed or out of range.
	EInvalid ErrorCode = "invalid"
	// ENotFound: the named thing does not exist.
	ENotFound ErrorCode = "not_found"
	// EUnknownType: no pool of that type is configured.
	EUnknownType ErrorCode = "unknown_type"
	// EExhausted: the pool has no resource to give right now.
	EExhausted ErrorCode = "exhausted"
	// ELeaseLost: the lease has ended (released or expired); the caller no
	// longer holds the resource.
	ELeaseLost ErrorCode = "lease_lost"
	// EConflict: the request clashes with the current state.
	EConflict ErrorCode = "conflict"
	// ETooLarge: the request body is over the limit.
	ETooLarge ErrorCode = "too_large"
	// EMethod: the path exists but not for that method.
	EMethod ErrorCode = "method_not_allowed"
	// EUnavailable: the broker cannot serve now (store down, shutting down);
	// retrying later is right.
	EUnavailable ErrorCode = "unavailable"
	// EUnauthenticated: the request carries no credentials berth accepts
	// (no token, an unknown or revoked one, no client certificate).
	EUnauthenticated ErrorCode = "unauthenticated"
	// EForbidden: the caller is known, but its role may not do this, or
	// the lease is another's.
	EForbidden ErrorCode = "forbidden"
	// EInternal: a bug or an unexpected failure.
	EInternal ErrorCode = "internal"
)

// Error is berth's one error type for anything a caller should see. Field
// names the offending input (a JSON field, a query parameter, a config path)
// where there is one.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Field   string    `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// Errorf returns an *Error with a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EInvalid *Error naming field.
func FieldErrorf(field, format string, args ...any) *Error {
	return &Error{Code: EInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCodeOf returns the code of the first *Error in err's chain, or
// EInternal for any other non-nil error.
func ErrorCodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}
