package main

import (
	"context"

	"fwproxy/mmsfilter"
	"fwproxy/proxy"
)

// mmsFilter registers the MMS filter with the proxy. The two packages do
// not know each other; this adapter is the only place they meet.
type mmsFilter struct{ f *mmsfilter.Filter }

var _ proxy.Filter = mmsFilter{}

func (mmsFilter) Name() string { return "mms" }

func (m mmsFilter) NewSession(_ context.Context, info proxy.SessionInfo) (proxy.FilterSession, error) {
	return m.f.NewConnection(mmsfilter.ConnInfo{
		Client:  info.Client,
		User:    info.User,
		Server:  info.Target,
		Local:   info.Local,
		Session: info.Session,
	}), nil
}
