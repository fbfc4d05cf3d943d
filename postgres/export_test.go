package postgres

// WriterCounts returns the append writers parked for work and those with
// a turn under way.
func (s *Store) WriterCounts() (idle, running int) {
	s.cmb.mu.Lock()
	defer s.cmb.mu.Unlock()
	return s.cmb.idle, s.cmb.running
}
