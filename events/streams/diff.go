package streams

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Kind says what a start does about a Difference.
type Kind int

const (
	// Warn: start goes on with the stream as the server has it, and says that
	// `memmie streams update` would apply the difference (a description, a limit an operator
	// set, a flag memmie no longer needs).
	Warn Kind = iota
	// Refuse: start fails. Either the difference is a choice of the deployment that one
	// process must not overturn (partitions, replicas, storage), or the server's stream lacks
	// something memmie relies on (a subject, a flag such as AllowMsgSchedules), so that
	// starting would fail later and less clearly.
	Refuse
)

// Difference is one field of a stream whose configuration on the server is not the one
// memmie wants.
type Difference struct {
	Stream string
	// Field names the field as the JetStream API does (max_msgs, allow_direct), or
	// "partitions" for the subject transform of the inbox or of MEMMIE_BLOBS.
	Field string
	// Server and Wanted are the field's values, as they are shown.
	Server, Wanted string
	Kind           Kind
	// Fix says what to do about it.
	Fix string
	// set copies the wanted value into a configuration.
	set func(dst *jetstream.StreamConfig, wanted jetstream.StreamConfig)
}

func (d Difference) String() string {
	s := fmt.Sprintf("stream %s: %s %s %s on the server, %s wanted", d.Stream, d.Field, isAre(d.Field), d.Server, d.Wanted)
	if d.Fix != "" {
		s += ": " + d.Fix
	}
	return s
}

func isAre(field string) string {
	if strings.HasSuffix(field, "s") && !strings.HasPrefix(field, "allow_") && !strings.HasPrefix(field, "deny_") {
		return "are"
	}
	return "is"
}

// field is one configuration field memmie sets.
type field struct {
	name string
	// show formats the field's value of a configuration.
	show func(jetstream.StreamConfig) string
	// kind returns what a difference means, given both values.
	kind func(server, wanted jetstream.StreamConfig) Kind
	// skip is true when memmie leaves the field to the server's default.
	skip func(wanted jetstream.StreamConfig) bool
	set  func(dst *jetstream.StreamConfig, wanted jetstream.StreamConfig)
	fix  func(server, wanted jetstream.StreamConfig) string
}

const updateFix = "apply it with 'memmie streams update'"

// devFix ends a refusal's fix that names `memmie streams update`.
const devFix = " (the store of a memmie dev: stop it, then add --data-dir <its data dir>)"

func warn(_, _ jetstream.StreamConfig) Kind   { return Warn }
func refuse(_, _ jetstream.StreamConfig) Kind { return Refuse }

// needs is the kind of a flag memmie needs on when want says so: missing, it refuses; an extra
// one only warns.
func needs(get func(jetstream.StreamConfig) bool, on bool) func(server, wanted jetstream.StreamConfig) Kind {
	return func(server, wanted jetstream.StreamConfig) Kind {
		if get(wanted) == on && get(server) != on {
			return Refuse
		}
		return Warn
	}
}

// flag is an Allow* flag. relied says whether memmie fails without it where it wants it on
// (schedules, roll-ups, atomic batches, TTLs); allow_direct is not, since reads fall back to
// the leader.
func flag(name string, get func(jetstream.StreamConfig) bool, set func(*jetstream.StreamConfig, bool), relied bool) field {
	kind := warn
	if relied {
		kind = needs(get, true)
	}
	return field{
		name: name,
		show: func(c jetstream.StreamConfig) string { return strconv.FormatBool(get(c)) },
		kind: kind,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { set(dst, get(w)) },
		fix: func(s, w jetstream.StreamConfig) string {
			if kind(s, w) == Refuse {
				return "memmie needs it; " + updateFix
			}
			return updateFix
		},
	}
}

func limit(name string, get func(jetstream.StreamConfig) int64, set func(*jetstream.StreamConfig, int64)) field {
	return field{
		name: name,
		show: func(c jetstream.StreamConfig) string { return strconv.FormatInt(get(c), 10) },
		kind: warn,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { set(dst, get(w)) },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	}
}

// fields are the fields memmie sets, in the order differences are listed.
var fields = []field{
	{
		name: "partitions",
		show: func(c jetstream.StreamConfig) string { return showTransform(c.SubjectTransform) },
		kind: refuse,
		set: func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) {
			if w.SubjectTransform == nil {
				dst.SubjectTransform = nil
				return
			}
			t := *w.SubjectTransform
			dst.SubjectTransform = &t
		},
		fix: func(s, w jetstream.StreamConfig) string {
			sp, sok := transformPartitions(s.SubjectTransform)
			wp, wok := transformPartitions(w.SubjectTransform)
			empty := "on an empty inbox"
			if w.Name == Blobs {
				empty = "once every blob event is processed"
			}
			if !sok || !wok {
				return "the stream's subject transform is not this memmie's; " + updateFix + " " + empty
			}
			return fmt.Sprintf("start with --partitions %d, or change them with 'memmie streams update --partitions %d' %s", sp, wp, empty)
		},
	},
	{
		name: "replicas",
		show: func(c jetstream.StreamConfig) string { return strconv.Itoa(c.Replicas) },
		kind: refuse,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Replicas = w.Replicas },
		fix: func(s, w jetstream.StreamConfig) string {
			return fmt.Sprintf("start with --replicas %d, or change them with 'memmie streams update --replicas %d'", s.Replicas, w.Replicas)
		},
	},
	{
		name: "storage",
		show: func(c jetstream.StreamConfig) string { return strings.ToLower(c.Storage.String()) },
		kind: refuse,
		// The server cannot change a stream's storage: update leaves it.
		set: func(*jetstream.StreamConfig, jetstream.StreamConfig) {},
		fix: func(s, _ jetstream.StreamConfig) string {
			return fmt.Sprintf("a stream's storage cannot change in place: start with %s storage (streams.Options.Storage), "+
				"or move the messages to a new stream", strings.ToLower(s.Storage.String()))
		},
	},
	{
		name: "retention",
		show: func(c jetstream.StreamConfig) string { return strings.ToLower(c.Retention.String()) },
		kind: refuse,
		set:  func(*jetstream.StreamConfig, jetstream.StreamConfig) {},
		fix: func(_, _ jetstream.StreamConfig) string {
			return "a stream's retention cannot change in place: move the messages to a new stream"
		},
	},
	{
		name: "subjects",
		show: func(c jetstream.StreamConfig) string { return strings.Join(c.Subjects, ",") },
		kind: func(s, w jetstream.StreamConfig) Kind {
			for _, subj := range w.Subjects {
				if !slices.Contains(s.Subjects, subj) {
					return Refuse
				}
			}
			return Warn
		},
		set: func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Subjects = slices.Clone(w.Subjects) },
		fix: func(s, w jetstream.StreamConfig) string {
			for _, subj := range w.Subjects {
				if !slices.Contains(s.Subjects, subj) {
					return "memmie publishes to " + subj + "; " + updateFix
				}
			}
			return updateFix
		},
	},
	{
		name: "description",
		show: func(c jetstream.StreamConfig) string { return strconv.Quote(c.Description) },
		kind: warn,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Description = w.Description },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	},
	limit("max_consumers", func(c jetstream.StreamConfig) int64 { return int64(c.MaxConsumers) },
		func(c *jetstream.StreamConfig, v int64) { c.MaxConsumers = int(v) }),
	limit("max_msgs", func(c jetstream.StreamConfig) int64 { return c.MaxMsgs },
		func(c *jetstream.StreamConfig, v int64) { c.MaxMsgs = v }),
	limit("max_bytes", func(c jetstream.StreamConfig) int64 { return c.MaxBytes },
		func(c *jetstream.StreamConfig, v int64) { c.MaxBytes = v }),
	limit("max_msgs_per_subject", func(c jetstream.StreamConfig) int64 { return c.MaxMsgsPerSubject },
		func(c *jetstream.StreamConfig, v int64) { c.MaxMsgsPerSubject = v }),
	limit("max_msg_size", func(c jetstream.StreamConfig) int64 { return int64(c.MaxMsgSize) },
		func(c *jetstream.StreamConfig, v int64) { c.MaxMsgSize = int32(v) }),
	{
		name: "max_age",
		show: func(c jetstream.StreamConfig) string { return c.MaxAge.String() },
		kind: warn,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.MaxAge = w.MaxAge },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	},
	{
		name: "discard",
		show: func(c jetstream.StreamConfig) string {
			return strings.TrimPrefix(strings.ToLower(c.Discard.String()), "discard")
		},
		kind: warn,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Discard = w.Discard },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	},
	{
		name: "duplicate_window",
		show: func(c jetstream.StreamConfig) string { return c.Duplicates.String() },
		kind: warn,
		// Zero leaves the server's default (two minutes).
		skip: func(w jetstream.StreamConfig) bool { return w.Duplicates == 0 },
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Duplicates = w.Duplicates },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	},
	{
		name: "compression",
		show: func(c jetstream.StreamConfig) string { return strings.ToLower(c.Compression.String()) },
		kind: warn,
		set:  func(dst *jetstream.StreamConfig, w jetstream.StreamConfig) { dst.Compression = w.Compression },
		fix:  func(_, _ jetstream.StreamConfig) string { return updateFix },
	},
	flag("allow_direct", func(c jetstream.StreamConfig) bool { return c.AllowDirect },
		func(c *jetstream.StreamConfig, v bool) { c.AllowDirect = v }, false),
	flag("allow_rollup_hdrs", func(c jetstream.StreamConfig) bool { return c.AllowRollup },
		func(c *jetstream.StreamConfig, v bool) { c.AllowRollup = v }, true),
	flag("allow_msg_schedules", func(c jetstream.StreamConfig) bool { return c.AllowMsgSchedules },
		func(c *jetstream.StreamConfig, v bool) { c.AllowMsgSchedules = v }, true),
	flag("allow_atomic", func(c jetstream.StreamConfig) bool { return c.AllowAtomicPublish },
		func(c *jetstream.StreamConfig, v bool) { c.AllowAtomicPublish = v }, true),
	flag("allow_msg_ttl", func(c jetstream.StreamConfig) bool { return c.AllowMsgTTL },
		func(c *jetstream.StreamConfig, v bool) { c.AllowMsgTTL = v }, true),
	deny("deny_delete", func(c jetstream.StreamConfig) bool { return c.DenyDelete }),
	deny("deny_purge", func(c jetstream.StreamConfig) bool { return c.DenyPurge }),
}

// deny is a Deny* flag: memmie deletes and purges (timers purge their schedules), and the
// server cannot cancel a deny, so one set on the server refuses.
func deny(name string, get func(jetstream.StreamConfig) bool) field {
	return field{
		name: name,
		show: func(c jetstream.StreamConfig) string { return strconv.FormatBool(get(c)) },
		kind: needs(get, false),
		set:  func(*jetstream.StreamConfig, jetstream.StreamConfig) {},
		fix: func(_, _ jetstream.StreamConfig) string {
			return "memmie needs it off, which the server cannot change: move the messages to a new stream"
		},
	}
}

// Diff compares a stream's configuration on the server with the one memmie wants, field by
// field, over the fields memmie sets only: what the server or an operator set besides
// (placement, metadata, sources) is no difference.
//
// Settings the server never turns off again are compared with what an update can reach: a
// stream that allows message schedules keeps them, and with them discard old and roll-ups
// (which schedules require), and one that allows per-message TTLs keeps those. Memmie only
// stops using them, so such a stream is no difference on those fields.
func Diff(server, wanted jetstream.StreamConfig) []Difference {
	wanted = reachable(server, withDefaults(wanted))
	var out []Difference
	for _, f := range fields {
		if f.skip != nil && f.skip(wanted) {
			continue
		}
		s, w := f.show(server), f.show(wanted)
		if s == w {
			continue
		}
		d := Difference{
			Stream: wanted.Name,
			Field:  f.name,
			Server: s,
			Wanted: w,
			Kind:   f.kind(server, wanted),
			Fix:    f.fix(server, wanted),
			set:    f.set,
		}
		if d.Kind == Refuse && d.Field != "replicas" && strings.Contains(d.Fix, "'memmie streams update") {
			// A refused memmie dev leaves no server to update against: the command opens its
			// store itself. (Replicas are a cluster's; a dev runs one server.)
			d.Fix += devFix
		}
		out = append(out, d)
	}
	return out
}

// withDefaults fills in what the server puts in place of a zero, so that a configuration that
// leaves a field to the server is no difference.
func withDefaults(c jetstream.StreamConfig) jetstream.StreamConfig {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	for _, v := range []*int64{&c.MaxMsgs, &c.MaxBytes, &c.MaxMsgsPerSubject} {
		if *v == 0 {
			*v = -1
		}
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = -1
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = -1
	}
	return c
}

// reachable returns wanted, but with what the server cannot turn off as the server has it
// (nats-server's configUpdateCheck).
func reachable(server, wanted jetstream.StreamConfig) jetstream.StreamConfig {
	if server.AllowMsgSchedules && !wanted.AllowMsgSchedules {
		wanted.AllowMsgSchedules, wanted.AllowRollup, wanted.Discard = true, true, jetstream.DiscardOld
	}
	if server.AllowMsgTTL && !wanted.AllowMsgTTL {
		wanted.AllowMsgTTL = true
	}
	return wanted
}

// Apply returns server with the differences applied: the wanted value of each field, and every
// other field as the server has it. Storage and retention are left, as the server cannot
// change them.
func Apply(server, wanted jetstream.StreamConfig, diffs []Difference) jetstream.StreamConfig {
	wanted = reachable(server, withDefaults(wanted))
	out := server
	out.Subjects = slices.Clone(server.Subjects)
	for _, d := range diffs {
		if d.set != nil {
			d.set(&out, wanted)
		}
	}
	return out
}

func showTransform(t *jetstream.SubjectTransformConfig) string {
	if t == nil {
		return "none"
	}
	if p, ok := transformPartitions(t); ok {
		return strconv.Itoa(p)
	}
	return t.Source + " > " + t.Destination
}

var (
	partitionsRE     = regexp.MustCompile(`^memmie\.inbox\.\{\{\s*partition\((\d+),\s*1\)\s*\}\}\.\{\{\s*wildcard\(1\)\s*\}\}$`)
	blobPartitionsRE = regexp.MustCompile(`^memmie\.blobs\.\{\{\s*partition\((\d+),\s*1\)\s*\}\}\.\{\{\s*wildcard\(1\)\s*\}\}\.\{\{\s*wildcard\(2\)\s*\}\}$`)
)

// transformPartitions returns the number of partitions of the inbox's or MEMMIE_BLOBS's
// subject transform.
func transformPartitions(t *jetstream.SubjectTransformConfig) (int, bool) {
	var re *regexp.Regexp
	switch {
	case t == nil:
		return 0, false
	case t.Source == "memmie.inbox.*":
		re = partitionsRE
	case t.Source == "memmie.blobs.*.*":
		re = blobPartitionsRE
	default:
		return 0, false
	}
	m := re.FindStringSubmatch(t.Destination)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// PartitionsOf returns the number of partitions of an inbox's or MEMMIE_BLOBS's configuration,
// as the server has it; false when it has no partitioning transform of memmie's.
func PartitionsOf(cfg jetstream.StreamConfig) (int, bool) {
	return transformPartitions(cfg.SubjectTransform)
}
