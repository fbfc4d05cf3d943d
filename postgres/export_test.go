package postgres

// AppendSQL exposes the append statement to tests.
func (s *Store) AppendSQL() string { return s.q.append }
