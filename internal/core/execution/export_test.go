package execution

import "testing"

// SetHistoryLimit lowers the history's bounds for one test, which must not run in parallel.
func SetHistoryLimit(t testing.TB, events int, bytes int64) {
	old := historyLimit
	historyLimit = HistorySize{Events: events, Bytes: bytes}
	t.Cleanup(func() { historyLimit = old })
}
