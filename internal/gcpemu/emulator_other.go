//go:build !unix

package gcpemu

import (
	"errors"
	"fmt"
)

var errNoGcloud = errors.New("emulators are started only on unix systems")

type emulator struct{ host string }

func start(k kind) (*emulator, error) {
	return nil, fmt.Errorf("%w: %s: %w (set %s)", ErrUnavailable, k.name, errNoGcloud, k.env)
}

func (e *emulator) stop() {}
