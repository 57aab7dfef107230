// Package partition consumes a changing set of a stream's partitions, each through a durable
// consumer pinned to one client at a time (priority policy pinned_client), on one consume
// loop. The orchestrator and the blobs handler each hold one: the engine follows the live
// processes (package lease) and hands both the same partition numbers.
//
//	loop, err := consume.New(js, consume.Config{Name: "orchestrator", Stream: "MEMMIE_INBOX", ...}, handle)
//	err = loop.Start(ctx)
//	set, err := partition.New(js, partition.Config{
//		Name: "orchestrator", Stream: "MEMMIE_INBOX", Loop: loop, Durable: "orchestrator",
//		Group: "orchestrator", PinnedTTL: 5 * time.Second, Partitions: 16,
//		Consumer: func(p int) jetstream.ConsumerConfig {
//			return jetstream.ConsumerConfig{FilterSubject: streams.InboxPartitionFilter(p), ...}
//		},
//	})
//	err = set.Assign(ctx, []int{0, 1, 2}) // consume exactly these
//	defer set.Stop(ctx)                   // stops the loop, then unpins them
//
// A partition that leaves is drained (consume.Loop.Remove) and then unpinned
// (jetstream.Stream.UnpinConsumer), so that the process that takes it over gets its messages at
// once rather than after PinnedTTL; a crashed process's pin expires after PinnedTTL. Pinning
// is what keeps two processes from pulling one partition while the views of the live
// processes differ; it never replaces what keeps the data correct (the handlers' expected
// sequence appends).
//
// The package never decides which partitions are whose (package lease does), and never
// starts the loop: its owner does, before the first Assign.
package partition
