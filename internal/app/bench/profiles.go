package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"
)

// profiler writes, into a folder, a CPU profile of every span of the saturation run
// (cpu-<from>s.pb.gz, from the span's start in seconds) and a heap profile at the end of each
// (heap-<at>s.pb.gz), so that the first and the last minute of a long run can be compared:
// `go tool pprof -diff_base heap-060s.pb.gz heap-600s.pb.gz`.
type profiler struct {
	dir   string
	every time.Duration
	began time.Time
	from  time.Time // the start of the current span
	next  time.Time // its end
	cpu   *os.File  // its CPU profile; nil once stopped
	done  bool
}

func startProfiles(dir string, every time.Duration, began time.Time) (*profiler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: profile dir: %w", err)
	}
	p := &profiler{dir: dir, every: every, began: began}
	if err := p.startCPU(began); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *profiler) name(kind string, at time.Time) string {
	return filepath.Join(p.dir, fmt.Sprintf("%s-%03.0fs.pb.gz", kind, at.Sub(p.began).Seconds()))
}

func (p *profiler) startCPU(at time.Time) error {
	f, err := os.Create(p.name("cpu", at))
	if err != nil {
		return fmt.Errorf("bench: CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("bench: start the CPU profile: %w", err)
	}
	p.cpu, p.from, p.next = f, at, at.Add(p.every)
	return nil
}

// tick ends the current span once it is over: its CPU profile, a heap profile, and the next
// span's CPU profile started.
func (p *profiler) tick(now time.Time) error {
	if p.done || now.Before(p.next) {
		return nil
	}
	if err := p.end(now); err != nil {
		return err
	}
	return p.startCPU(now)
}

// stop ends the profiles: the current span's, and no more.
func (p *profiler) stop(now time.Time) error {
	if p.done {
		return nil
	}
	p.done = true
	return p.end(now)
}

// end ends the current span's CPU profile and writes a heap profile. A last span of under a
// second is dropped: its files would be named as the span before's (whole seconds).
func (p *profiler) end(now time.Time) error {
	if p.cpu == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.cpu.Close()
	name := p.cpu.Name()
	p.cpu = nil
	if err != nil {
		return fmt.Errorf("bench: CPU profile: %w", err)
	}
	if p.done && now.Sub(p.from) < time.Second && p.from.After(p.began) {
		if err := os.Remove(name); err != nil {
			return fmt.Errorf("bench: CPU profile: %w", err)
		}
		return nil
	}
	// A heap profile is as of the last GC: run one, so that it is of now.
	runtime.GC()
	f, err := os.Create(p.name("heap", now))
	if err != nil {
		return fmt.Errorf("bench: heap profile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("bench: heap profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: heap profile: %w", err)
	}
	return nil
}
