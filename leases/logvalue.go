package leases

import "log/slog"

// The package's keys and enums log as their names: slog's JSON handler
// would otherwise print a Key as an object of its fields and an enum as its
// number ("reason":2).

var (
	_ slog.LogValuer = Key{}
	_ slog.LogValuer = Kind(0)
	_ slog.LogValuer = DropReason(0)
	_ slog.LogValuer = FailReason(0)
	_ slog.LogValuer = Event(0)
	_ slog.LogValuer = Outcome(0)
	_ slog.LogValuer = State(0)
)

// LogValue is "ip/user/port" (see String).
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// LogValue is the kind's name.
func (k Kind) LogValue() slog.Value { return slog.StringValue(k.String()) }

// LogValue is the reason's name, as in the metric label.
func (r DropReason) LogValue() slog.Value { return slog.StringValue(r.String()) }

// LogValue is the reason's name, as in the metric label.
func (r FailReason) LogValue() slog.Value { return slog.StringValue(r.String()) }

// LogValue is the event's name, as in the metric label.
func (e Event) LogValue() slog.Value { return slog.StringValue(e.String()) }

// LogValue is the outcome's name, as in the metric label.
func (o Outcome) LogValue() slog.Value { return slog.StringValue(o.String()) }

// LogValue is the state's name.
func (s State) LogValue() slog.Value { return slog.StringValue(s.String()) }
