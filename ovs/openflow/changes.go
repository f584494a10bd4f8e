package openflow

// Changes is one atomic update of a bridge's flows, sent as one OpenFlow 1.5
// bundle: Delete (strict: by table, priority and match), Modify (strict) and
// Add. With ReplaceAll, every flow of the bridge is deleted first, in the same
// bundle, so a restarted agent replaces stale flows without a gap.
// (Defined by the lead; the Client's Apply consumes it.)
type Changes struct {
	Add, Modify, Delete []Flow
	ReplaceAll          bool
}

// Empty reports whether applying the changes would do nothing.
func (c Changes) Empty() bool {
	return !c.ReplaceAll && len(c.Add) == 0 && len(c.Modify) == 0 && len(c.Delete) == 0
}
