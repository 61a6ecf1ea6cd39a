package leases

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzLeaseOps reads its input as a program of lease operations on a few
// keys — acquire of either kind with or without a wanted port, release of
// any holder (current, handed-over or already released), groups of two
// keys acquired and released as one, clock advances, snapshots — and checks after every step that the table agrees with a
// model of it, and at the end that Close leaves nothing behind.
func FuzzLeaseOps(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x20, 0x01, 0x11, 0x30, 0x40, 0x00})
	f.Add([]byte{0x00, 0x00, 0x10, 0x10, 0x10, 0x30, 0x00})
	f.Add([]byte{0x04, 0x05, 0x14, 0x15, 0x30, 0x30, 0x04, 0x40})
	f.Add([]byte{0x02, 0x12, 0x12, 0x22, 0x50, 0x02, 0x30})
	f.Add([]byte{0x50, 0x54, 0x60, 0x41, 0x51, 0x23, 0x4f, 0x4f, 0x00, 0x52, 0x60})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 64 {
			prog = prog[:64]
		}
		const nKeys = 4
		for _, linger := range []time.Duration{0, time.Second} {
			clock := newFakeClock()
			cfg := testConfig()
			cfg.Linger = linger
			cfg.MaxLeases = 3
			cfg.MaxBufferedDatagrams = 4
			m, err := New(cfg, Deps{Clock: clock})
			require.NoError(t, err)
			// A failed step must not leave sockets and readers behind
			// for the next input (they would fail it as leaks).
			t.Cleanup(func() { m.Close() })

			type mkey struct {
				live      []*Holder // unreleased holders
				all       []*Holder // every holder ever, for stale releases
				exists    bool
				lingering bool
				deadline  time.Time
				port      uint16
			}
			model := make([]mkey, nKeys)
			// releaseInModel drops h from o's live holders, if there.
			releaseInModel := func(o *mkey, h *Holder) {
				for j, x := range o.live {
					if x == h {
						o.live = append(o.live[:j], o.live[j+1:]...)
						if len(o.live) == 0 {
							if linger == 0 {
								o.exists = false
							} else {
								o.lingering = true
								o.deadline = clock.Now().Add(linger)
							}
						}
						return
					}
				}
			}
			type groupOf struct {
				g    *Group
				keys [2]int
			}
			var groups []groupOf
			keyOf := func(i int) Key {
				return Key{Client: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), Port: uint16(6000 + i)}
			}
			for _, op := range prog {
				i := int(op & 0x03)
				mk := &model[i]
				switch op >> 4 & 0x07 {
				case 0, 1: // acquire
					kind := KindAssociation
					if op&0x04 != 0 {
						kind = KindAnnounced
					}
					h, err := m.Acquire(context.Background(), keyOf(i), Request{Kind: kind, Deliver: nopDeliver})
					if err != nil {
						// Only the table cap may refuse, and only with no
						// lingering lease to evict.
						require.True(t, errors.Is(err, ErrTableFull), "%v", err)
						for _, o := range model {
							require.False(t, o.exists && o.lingering)
						}
						continue
					}
					if mk.exists {
						require.Equal(t, mk.port, h.Port(), "an existing lease keeps its port")
					}
					mk.live = append(mk.live, h)
					mk.all = append(mk.all, h)
					mk.exists, mk.lingering, mk.port = true, false, h.Port()
				case 2, 3: // release some holder, maybe a stale one
					if len(mk.all) == 0 {
						continue
					}
					h := mk.all[int(op>>2&0x03)%len(mk.all)]
					h.Release()
					releaseInModel(mk, h)
				case 5: // acquire keys i and i+1 as a group
					j := (i + 1) % nKeys
					g, err := m.AcquireGroup(context.Background(), []Key{keyOf(i), keyOf(j)}, GroupRequest{
						Members:   []Request{{Kind: KindAnnounced, Deliver: nopDeliver}, {Kind: KindAnnounced, Deliver: nopDeliver}},
						EvenFirst: op&0x04 != 0,
					})
					if err != nil {
						// All or nothing: the reconciliation below finds
						// no new lease and no new holder (but the lingering
						// leases the first member's reservation evicted
						// before the second failed).
						require.True(t, errors.Is(err, ErrTableFull) || errors.Is(err, ErrGroupLayout) || errors.Is(err, ErrPortTaken), "%v", err)
						break
					}
					ports := g.Ports()
					require.Equal(t, ports[0]+1, ports[1], "consecutive")
					if op&0x04 != 0 {
						require.Zero(t, ports[0]%2, "even first")
					}
					for n, k := range []int{i, j} {
						o := &model[k]
						if o.exists {
							require.Equal(t, o.port, ports[n], "an existing lease keeps its port")
						}
						h := g.Holder(n)
						o.live = append(o.live, h)
						o.all = append(o.all, h)
						o.exists, o.lingering, o.port = true, false, ports[n]
					}
					groups = append(groups, groupOf{g, [2]int{i, j}})
				case 6: // release a whole group
					if len(groups) == 0 {
						continue
					}
					gr := groups[int(op&0x0f)%len(groups)]
					gr.g.Release()
					for n, k := range gr.keys {
						releaseInModel(&model[k], gr.g.Holder(n))
					}
				case 4: // time passes
					clock.Advance(time.Duration(op&0x0f) * 100 * time.Millisecond)
					for j := range model {
						if model[j].exists && model[j].lingering && !model[j].deadline.After(clock.Now()) {
							model[j].exists = false
						}
					}
				default:
					_ = m.Snapshot()
				}
				// Evictions are invisible to the model: reconcile them.
				snap := map[Key]LeaseInfo{}
				for _, in := range m.Snapshot() {
					snap[in.Key] = in
				}
				st := m.Stats()
				require.Equal(t, len(snap), st.Leases)
				require.LessOrEqual(t, st.Leases, cfg.MaxLeases)
				for j := range model {
					in, ok := snap[keyOf(j)]
					o := &model[j]
					if o.exists && o.lingering && !ok {
						o.exists = false // evicted
					}
					require.Equal(t, o.exists, ok, "key %d", j)
					if !ok {
						o.live = nil
						continue
					}
					require.Equal(t, len(o.live), in.Associations+in.Announced, "key %d", j)
					want := StateActive
					if o.lingering {
						want = StateLingering
					}
					require.Equal(t, want, in.State, "key %d", j)
				}
			}
			require.NoError(t, m.Close())
			require.Zero(t, clock.pending())
			requireNoLeakedGoroutines(t)
		}
	})
}
