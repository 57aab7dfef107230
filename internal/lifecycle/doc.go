// Package lifecycle is the one start/stop discipline of memmie's long-running components (in
// the manner of River's startstop): a component starts once, runs its background work until
// it is stopped, and Stop waits for that work to end; when the caller's context ends first, the
// work's own context is cancelled and Stop still waits for it to return, so that nothing a
// component started outlives its Stop. A Group starts components in order and stops them in reverse.
//
//	type Lease struct{ life lifecycle.Service; ... }
//
//	func (l *Lease) Start(ctx context.Context) error {
//		return l.life.Start(ctx, l.acquire, l.run) // acquire once, then run until stopped
//	}
//
//	func (l *Lease) Stop(ctx context.Context) error {
//		return l.life.Stop(ctx, l.release) // run has returned; release what it held
//	}
//
// It must never do I/O of its own or know what a component does.
package lifecycle
