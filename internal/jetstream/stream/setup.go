package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events/streams"
)

// MinServerVersion is the oldest nats-server memmie runs on. 2.15 is the first that applies a
// stream's subject transform to the messages its schedules fire, which puts a fired timer in
// its execution's inbox partition (streams.InboxConfig); it also has everything older memmie
// needs (per-message TTLs, atomic batches, pinned consumers).
const MinServerVersion = "2.15.0"

// CheckServerVersion returns an error unless version (as a server announces it, such as
// 2.15.2 or 2.16.0-RC.1) is MinServerVersion or later. A pre-release of MinServerVersion is
// older than it.
func CheckServerVersion(version string) error {
	got, err := parseVersion(version)
	if err != nil {
		return fmt.Errorf("nats-server version %q: %w; memmie needs nats-server %s or later", version, err, MinServerVersion)
	}
	min, _ := parseVersion(MinServerVersion)
	if got.less(min) {
		return fmt.Errorf("nats-server %s is too old: memmie needs nats-server %s or later (timers rely on the inbox's subject transform of fired schedules)",
			version, MinServerVersion)
	}
	return nil
}

type version struct {
	major, minor, patch int
	pre                 string
}

func parseVersion(s string) (version, error) {
	core, pre, _ := strings.Cut(strings.TrimPrefix(s, "v"), "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return version{}, errors.New("want major.minor.patch")
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return version{}, fmt.Errorf("%q is not a number", p)
		}
		n[i] = v
	}
	return version{n[0], n[1], n[2], pre}, nil
}

// less orders versions; a pre-release comes before its release, pre-releases are not ordered
// among themselves.
func (v version) less(w version) bool {
	if c := cmp.Or(cmp.Compare(v.major, w.major), cmp.Compare(v.minor, w.minor), cmp.Compare(v.patch, w.patch)); c != 0 {
		return c < 0
	}
	return v.pre != "" && w.pre == ""
}

// Status is a stream as the server has it, next to the configuration memmie wants.
type Status struct {
	Wanted jetstream.StreamConfig
	// Server is the stream's configuration on the server; nil when the stream does not exist.
	Server *jetstream.StreamConfig
	// Differences are the fields memmie sets whose values differ (streams.Diff).
	Differences []streams.Difference
}

// Compare reads each stream's configuration from the server and compares it with cfgs.
func Compare(ctx context.Context, js jetstream.JetStream, cfgs []jetstream.StreamConfig) ([]Status, error) {
	out := make([]Status, 0, len(cfgs))
	for _, cfg := range cfgs {
		st := Status{Wanted: cfg}
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return nil, fmt.Errorf("read stream %s: %w", cfg.Name, err)
		default:
			got := s.CachedInfo().Config
			st.Server = &got
			st.Differences = streams.Diff(got, cfg)
		}
		out = append(out, st)
	}
	return out, nil
}

// MismatchError refuses a start: a stream differs from the wanted configuration in a way that
// a start must not change (streams.Refuse).
type MismatchError struct {
	Differences []streams.Difference
}

func (e *MismatchError) Error() string {
	lines := make([]string, len(e.Differences))
	for i, d := range e.Differences {
		lines[i] = d.String()
	}
	return strings.Join(lines, "; ")
}

// EnsureStreams is Ensure with its warnings on slog.Default().
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfgs []jetstream.StreamConfig) error {
	return Ensure(ctx, js, cfgs, nil)
}

// Ensure makes the streams ready for a start without ever rewriting one: it checks the
// server's version (MinServerVersion), creates the streams that do not exist, and compares
// those that do with cfgs (streams.Diff). A difference of kind streams.Refuse (partitions,
// replicas, storage, something memmie relies on) fails with a *MismatchError naming each one
// and its fix, before anything is created; any other difference is logged as a warning on log
// (nil: slog.Default()) and left as the server has it. Intended changes are applied by Update
// (`memmie streams update`).
func Ensure(ctx context.Context, js jetstream.JetStream, cfgs []jetstream.StreamConfig, log *slog.Logger) error {
	log = cmp.Or(log, slog.Default())
	// The server this connection is on; in a cluster being upgraded, check every server.
	v := js.Conn().ConnectedServerVersion()
	if v == "" {
		return fmt.Errorf("ensure streams: not connected to a NATS server (connection %s)", js.Conn().Status())
	}
	if err := CheckServerVersion(v); err != nil {
		return fmt.Errorf("ensure streams: %w", err)
	}
	statuses, err := Compare(ctx, js, cfgs)
	if err != nil {
		return fmt.Errorf("ensure streams: %w", err)
	}
	if err := refusals(statuses); err != nil {
		return fmt.Errorf("ensure streams: %w", err)
	}
	for _, st := range statuses {
		if st.Server == nil {
			if err := create(ctx, js, st.Wanted); err != nil {
				return err
			}
			continue
		}
		for _, d := range st.Differences {
			log.Warn("stream differs from memmie's configuration; left as the server has it until 'memmie streams update'",
				"stream", d.Stream, "field", d.Field, "server", d.Server, "wanted", d.Wanted)
		}
	}
	return nil
}

func refusals(statuses []Status) error {
	var refused []streams.Difference
	for _, st := range statuses {
		for _, d := range st.Differences {
			if d.Kind == streams.Refuse {
				refused = append(refused, d)
			}
		}
	}
	if len(refused) > 0 {
		return &MismatchError{Differences: refused}
	}
	return nil
}

// create creates a stream, or, when another process created it meanwhile, compares it. The
// created stream is compared too: a server that drops a setting it does not know (an old or
// misconfigured one) is refused.
func create(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	if err := refusals([]Status{{Differences: streams.Diff(s.CachedInfo().Config, cfg)}}); err != nil {
		return fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Update applies the differences of one stream: it creates the stream when st.Server is nil,
// and otherwise updates it to the server's configuration with every difference applied
// (streams.Apply). It refuses a difference the server cannot apply (storage, retention, a
// deny flag). Deciding whether a change is safe (partitions on a non-empty inbox) is the
// caller's.
func Update(ctx context.Context, js jetstream.JetStream, st Status) error {
	if st.Server == nil {
		return create(ctx, js, st.Wanted)
	}
	if len(st.Differences) == 0 {
		return nil
	}
	cfg := streams.Apply(*st.Server, st.Wanted, st.Differences)
	if left := streams.Diff(cfg, st.Wanted); len(left) > 0 {
		return fmt.Errorf("update stream %s: the server cannot change this in place: %w", st.Wanted.Name, &MismatchError{Differences: left})
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("update stream %s: %w", st.Wanted.Name, err)
	}
	return nil
}
