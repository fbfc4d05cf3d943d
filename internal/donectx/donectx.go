// Package donectx ties a context to a store's closing.
package donectx

import "context"

// WithDone returns a copy of ctx that is also cancelled when done is
// closed (a store's Close closes it), and its cancel function, which the
// caller must call: it ends the goroutine that waits for done.
func WithDone(ctx context.Context, done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
