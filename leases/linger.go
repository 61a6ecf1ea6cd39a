package leases

import "time"

// startLingerLocked arms the linger timer for a new linger period.
func (l *lease) startLingerLocked() {
	l.lingerSeq++
	seq := l.lingerSeq
	l.lingerDeadline = l.m.clock.Now().Add(l.m.cfg.Linger)
	l.timer = l.m.clock.AfterFunc(l.m.cfg.Linger, func() { l.m.expire(l, seq) })
}

// startAssocGraceLocked arms the association grace: the lease's last
// association left while announced holders remain. Delivery waits in the
// buffer for a new association (the firewall client rebinding) for Linger,
// then goes to the announced holders. It shares the linger timer fields:
// the two never run at once (a grace needs holders, a linger none).
func (l *lease) startAssocGraceLocked() {
	l.stopLingerLocked()
	l.lingerSeq++
	seq := l.lingerSeq
	l.timer = l.m.clock.AfterFunc(l.m.cfg.Linger, func() { l.m.endAssocGrace(l, seq) })
}

// endAssocGraceLocked makes the announced holders targets again.
func (l *lease) endAssocGraceLocked() {
	l.everAssoc = false
	l.retargetLocked()
}

func (l *lease) stopLingerLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.lingerSeq++ // a timer that already fired finds its period gone
	l.lingerDeadline = time.Time{}
}
