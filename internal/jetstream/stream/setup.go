package stream

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStreams creates each stream, or updates it to cfg when it exists. It fails when the
// server silently drops a setting memmie relies on (AllowAtomicPublish, AllowDirect), which is
// what a server too old to know it does.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfgs []jetstream.StreamConfig) error {
	for _, cfg := range cfgs {
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		if err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
		got := s.CachedInfo().Config
		if cfg.AllowAtomicPublish && !got.AllowAtomicPublish {
			return fmt.Errorf("ensure stream %s: the server does not support atomic batch publish (nats-server 2.12 or later)", cfg.Name)
		}
		if cfg.AllowDirect && !got.AllowDirect {
			return fmt.Errorf("ensure stream %s: the server did not enable direct get", cfg.Name)
		}
	}
	return nil
}
