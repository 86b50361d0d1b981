package auth

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is matched (with errors.Is) by every error that Verify returns. Those errors' messages are short
// sentences meant for the caller, suitable as the message of a 401 Kubernetes Status.
var ErrInvalidToken = errors.New("invalid token")

// ErrBadPath is matched by the errors Classify returns for a request path it refuses to interpret: a non-canonical
// path (".", ".." or empty segments, percent-encoded "/" or ".") that different components could resolve differently.
var ErrBadPath = errors.New("bad request path")

// ErrRevoked and ErrUntrustedKey are matched by the errors of Verify and Recheck for a revoked token and for a
// token whose signing key is not (or no longer) trusted; ErrExpired by those for an expired one.
var (
	ErrRevoked      = errors.New("token revoked")
	ErrUntrustedKey = errors.New("signing key not trusted")
	ErrExpired      = jwt.ErrTokenExpired
)

// tokenError is a user-facing token verification failure. Error returns only msg; the cause (often a jwt/v5
// sentinel such as jwt.ErrTokenExpired) stays reachable through errors.Is and errors.As.
type tokenError struct {
	msg   string
	cause error
}

func (e *tokenError) Error() string { return e.msg }

func (e *tokenError) Unwrap() error { return e.cause }

func (e *tokenError) Is(target error) bool { return target == ErrInvalidToken }

func invalid(cause error, msg string) error { return &tokenError{msg: msg, cause: cause} }
