// Package handler adapts HTTP handlers that return errors, so a handler
// cannot forget to return after writing an error, and maps errors to
// responses in one place: a typed *Error carries the status and a message
// safe to show; anything else is logged and answered with a bare 500.
package handler

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Func is an HTTP handler that returns an error instead of writing one.
type Func func(w http.ResponseWriter, r *http.Request) error

// Error is an error with an HTTP status and a message safe to show the
// client. Err, when set, is the cause; it goes to the log, not the client.
type Error struct {
	Status  int
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the status and a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the status and message, keeping err as the cause.
func Wrap(status int, message string, err error) *Error {
	return &Error{Status: status, Message: message, Err: err}
}

// Writer writes an error response with a status and a message safe to show.
type Writer func(w http.ResponseWriter, r *http.Request, status int, message string)

// PlainText writes the message as text/plain.
func PlainText(w http.ResponseWriter, _ *http.Request, status int, message string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, message)
}

// Adapt turns f into an http.Handler: a returned error is logged with its
// cause and written once by write. Panics become logged 500s.
func Adapt(logger *slog.Logger, write Writer, f Func) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.ErrorContext(r.Context(), "handler panic", "panic", fmt.Sprint(v), "path", r.URL.Path)
				write(w, r, http.StatusInternalServerError, "internal error")
			}
		}()
		err := f(w, r)
		if err == nil {
			return
		}
		status, message := Status(err)
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		logger.Log(r.Context(), level, "request failed", "path", r.URL.Path, "http_status", status, "err", err)
		write(w, r, status, message)
	})
}

// Status maps an error to the status and message a client may see.
func Status(err error) (int, string) {
	var he *Error
	if errors.As(err, &he) {
		return he.Status, he.Message
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit)
	}
	return http.StatusInternalServerError, "internal error"
}
