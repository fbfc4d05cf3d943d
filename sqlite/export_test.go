package sqlite

// SetAppendHook makes Append call fn after each entry it writes, inside its
// transaction; an error from fn fails the Append.
func SetAppendHook(s *Store, fn func(i int) error) { s.appendHook = fn }
