package streams

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// Leases is the stream through which memmie processes coordinate: each live process keeps a
// heartbeat on memmie.leases.members.<process_id>, and a leader holds
// memmie.leases.leader.<role> (the dispatcher's, so that --max-running holds across
// processes; the reconciler's), and the dispatcher's leader keeps a snapshot of its view on
// memmie.leases.snapshots.dispatcher.<part>, so that a start replays only the queue events
// after it. It is internal: clients never read or write it.
const Leases = "MEMMIE_LEASES"

// Subjects of the leases stream.
const (
	SubjectLeases  = "memmie.leases.>"
	SubjectMembers = "memmie.leases.members.*" // memmie.leases.members.<process_id>
)

// MemberSubject returns memmie.leases.members.<process_id>.
func MemberSubject(processID string) (string, error) {
	if err := events.ValidToken(processID); err != nil {
		return "", fmt.Errorf("member subject: process id: %w", err)
	}
	return "memmie.leases.members." + processID, nil
}

// LeaderSubject returns memmie.leases.leader.<role>.
func LeaderSubject(role string) (string, error) {
	if err := events.ValidToken(role); err != nil {
		return "", fmt.Errorf("leader subject: role: %w", err)
	}
	return "memmie.leases.leader." + role, nil
}

// LeasesConfig returns the configuration of the leases stream.
//
// Choices, and why:
//   - One message per subject: a heartbeat or a lease is only its last state, and an update
//     that expects the subject's last sequence (Nats-Expected-Last-Subject-Sequence) is a
//     compare-and-swap.
//   - Per-message TTLs (Nats-TTL, nats-server 2.11 and later): a heartbeat or a lease that is
//     not renewed disappears on its own, so a crashed process leaves nothing behind.
//   - Storage as the other streams': a lease outlives a restart of the server.
//   - AllowDirect: every process reads the leader's lease often.
func LeasesConfig(opts Options) jetstream.StreamConfig {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	return jetstream.StreamConfig{
		Name:              Leases,
		Description:       "Heartbeats of live memmie processes and leader leases (internal)",
		Subjects:          []string{SubjectLeases},
		Retention:         jetstream.LimitsPolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        4 << 10,
		Discard:           jetstream.DiscardOld,
		Storage:           opts.Storage,
		Replicas:          opts.Replicas,
		AllowDirect:       true,
		AllowMsgTTL:       true,
	}
}
