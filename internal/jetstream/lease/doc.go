// Package lease lets memmie processes share the work through JetStream, on the internal
// stream MEMMIE_LEASES (streams.LeasesConfig). It never decides what the work is; it says who
// is alive, which partitions are whose, and who leads.
//
//   - Members keeps this process's heartbeat on memmie.leases.members.<process_id> (a message
//     with a per-message TTL, renewed every TTL/5 by a compare-and-swap on the subject's last
//     sequence) and follows the live processes: the heartbeats still stored. A process that
//     stops cleanly deletes its heartbeat; one that crashes is gone when its last heartbeat
//     expires. Each heartbeat carries a random instance nonce: a process refuses to start
//     (ErrIDInUse) when another instance's heartbeat with its id is renewed within two
//     renewal periods, and takes the id over when it is not (the last heartbeat of a crashed
//     process), so a restart after a crash waits 2.5 periods, not a TTL.
//   - Assign shares N partitions out over the live processes by rendezvous hashing: each
//     partition goes to the process with the highest hash of (process, partition). Every
//     process computes the same answer from the same members, without talking to the others;
//     when a process joins or leaves, only the partitions it gains or loses move.
//   - Lease is a leader lease on memmie.leases.leader.<role>: created if absent, renewed by a
//     compare-and-swap on the subject's last sequence (Nats-Expected-Last-Subject-Sequence),
//     released by the same, and lost when not renewed within its TTL.
//
// In use:
//
//	members, err := lease.NewMembers(js, lease.MembersConfig{ID: "p1", OnChange: func(live []string) {
//		mine := lease.Assign(16, live, "p1")
//		...
//	}})
//	err = members.Start(ctx)
//	defer members.Stop(ctx)
//
//	leader, err := lease.New(js, lease.Config{Role: "dispatcher", Holder: "p1"})
//	err = leader.Start(ctx)
//	defer leader.Stop(ctx)
//	if leader.Held() { ... }
//
// Why these choices:
//   - The stream, not a KV bucket: its subjects start with memmie. like every subject memmie
//     uses (the engine's NATS permissions cover memmie.>), and a KV bucket is this very
//     stream under another name.
//   - Liveness is the server's: a heartbeat is live while it is stored, and its TTL is the
//     server's clock, so processes need no synchronised clocks to agree on who is alive.
//   - A lease holder counts its own lease valid until the time it sent the last renewal plus
//     the TTL, less one renewal period. A contender takes an expired lease only once the
//     server dropped it, or after watching its sequence stay unchanged for a whole TTL by its
//     own clock; either happens after the holder stopped counting on it.
//   - Rendezvous hashing rather than a coordinator: there is no assignment to store, to lock
//     or to repair, and views of the members that differ for a moment (a second at most)
//     differ only on the partitions that move. The partition consumers' pinned-client policy
//     keeps two processes from pulling one partition meanwhile.
package lease
