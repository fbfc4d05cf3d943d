package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// DispatchTx dispatches inside the caller's transaction tx: it validates the
// dispatch, matches listeners and runs handlers with h.Prepare, then appends
// the batch with [Store.AppendTx]. The messages become visible, and
// listeners in every process are woken, if and only if tx commits; a
// rollback leaves no trace. h must be a hub on s.
//
// A dispatch with an idempotency key that was already used in the window
// returns the earlier dispatch's messages and writes nothing; if the key was
// used for another request, it fails with an error wrapping
// moitessier.ErrIdempotencyMismatch, and tx is not aborted by it.
func DispatchTx(ctx context.Context, h *moitessier.Hub, s *Store, tx pgx.Tx, sender, scope, text string, opts ...moitessier.DispatchOption) ([]moitessier.Message, error) {
	b, err := h.Prepare(ctx, sender, scope, text, opts...)
	if err != nil {
		return nil, err
	}
	msgs, _, err := s.AppendTx(ctx, tx, b)
	if err != nil {
		return nil, fmt.Errorf("dispatch to %q: %w", scope, err)
	}
	return msgs, nil
}
