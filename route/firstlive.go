package route

// firstLive is active/standby: the first configured member that is live
// gets every session, the next ones only when it is down.
type firstLive struct{}

func (firstLive) Order([]Member) {}
