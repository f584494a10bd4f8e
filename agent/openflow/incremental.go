package openflow

import (
	"cmp"
	"slices"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// Incremental renders states as Render does, remembering what it rendered
// so that a small change costs little: each policy's flows are kept with
// the inputs they came from (the policy, its groups, the local pods it
// applies to and its conjunction ids) and rendered again only when one of
// those changed, and the merged table is kept by key, so only the entries
// whose contributing flows changed are merged again. The zero value is
// ready to use. An Incremental is not safe for concurrent use.
//
// Render stays the reference: after every Update, the flows Update
// describes are exactly those Render returns for the same state and ids.
type Incremental struct {
	// built is set once the first Update rendered everything.
	built bool
	// banded is set when the last Update's table had a rule table in more
	// than one priority band (bands.go): its flows are then not the
	// merged entries themselves.
	banded bool
	// atg and ag are the groups of the last state, to tell which changed.
	atg      map[string]*cp.AppliedToGroup
	ag       map[string]*cp.AddressGroup
	base     *contributor
	policies map[string]*policyEntry
	// entries is the merged table by key (the first Update's allocated
	// from slab); big counts its entries that put a rule table in bands.
	entries map[flowKey]*entry
	slab    []entry
	big     int
}

// Delta is what an Update found. Either Full is the whole table (as Render
// returns it), or Changed and Removed are the difference from the table of
// the previous Update: Changed the flows whose key is new or whose value
// may have changed, Removed a flow of each key that is gone (its key is
// what matters: its actions and cookie need not be those of the table).
type Delta struct {
	Full             []of.Flow
	Changed, Removed []of.Flow
}

// contributor is a source of flows for the merge: the base (pipeline, pods,
// network) or one policy. Render merges the base's flows first, then the
// policies' in name order, each in the order it made them.
type contributor struct {
	isPolicy bool
	name     string
	flows    []of.Flow
	// keys and entries are the flows' keys and entries in the table.
	keys    []flowKey
	entries []*entry
}

// policyEntry is one policy's rendered flows and what they depend on.
type policyEntry struct {
	contributor
	pol *cp.NetworkPolicy
	// targets are the local pods the policy applied to.
	targets []targetRef
	// units and ids are the conjunction keys asked for, in order, and the
	// ids they got.
	units []string
	ids   []uint32
}

// targetRef is what a policy's flows use of a local pod it applies to.
type targetRef struct {
	ofPort    int32
	namespace string
	name      string
}

// entry is one key of the merged table: the flows merged into it, and
// whether the merged flow puts its rule table in bands.
type entry struct {
	from []contribution
	big  bool
	// unsorted is set when from is not in Render's order.
	unsorted bool
}

// dirtyKey is a key an Update changed the flows of: whether the table had
// it before, and one of its flows (for the key).
type dirtyKey struct {
	was  bool
	flow *of.Flow
}

// contribution is flow i of a contributor.
type contribution struct {
	c *contributor
	i int
}

func (a contribution) compare(b contribution) int {
	if a.c != b.c {
		if c := cmp.Compare(btoi(a.c.isPolicy), btoi(b.c.isPolicy)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.c.name, b.c.name); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.i, b.i)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Reset forgets everything: the next Update renders the whole table. Call
// it when the table an Update described was not installed.
func (r *Incremental) Reset() { *r = Incremental{} }

// Update renders st, calling ids for the same keys in the same order as
// Render(st, ids) would, and describes the result relative to the previous
// Update's. The first Update, and any while a rule table is (or was) in
// priority bands, returns the full table. On error, call Reset.
//
// States passed to Update must not be modified afterwards (pass copies):
// an unchanged object is recognized by identity, so a policy or group
// changed in place would keep its old flows.
func (r *Incremental) Update(st State, ids ConjIDs) (Delta, error) {
	// The first Update (after New or Reset) merges every key once at the
	// end; later ones track the keys they change.
	var dirty map[flowKey]dirtyKey
	if r.built {
		dirty = map[flowKey]dirtyKey{}
	} else {
		r.entries = map[flowKey]*entry{}
		r.policies = map[string]*policyEntry{}
	}
	r.updateBase(st, dirty)
	names := r.updatePolicies(st, ids, dirty)

	if r.built {
		var d Delta
		for k, dk := range dirty {
			e := r.entries[k]
			f, present := e.fold()
			if big := present && isBig(f); big != e.big {
				e.big = big
				r.big += 2*btoi(big) - 1
			}
			switch {
			case present:
				d.Changed = append(d.Changed, f)
			case dk.was:
				d.Removed = append(d.Removed, *dk.flow)
			}
			if !present {
				delete(r.entries, k)
			}
		}
		if !r.banded && r.big == 0 {
			return d, nil
		}
	}
	// The whole table: every key merged, sorted, in bands if need be.
	// Each key is merged where its first flow is, walking the flows in
	// Render's order (in memory order, mostly).
	flows := make([]of.Flow, 0, len(r.entries))
	matches := make([]string, 0, len(r.entries))
	r.big = 0
	walk := func(c *contributor) {
		for i, e := range c.entries {
			if e.unsorted {
				slices.SortFunc(e.from, contribution.compare)
				e.unsorted = false
			}
			if first := e.from[0]; first.c != c || first.i != i {
				continue
			}
			f, _ := fold(e.from)
			e.big = isBig(f)
			r.big += btoi(e.big)
			flows = append(flows, f)
			matches = append(matches, c.keys[i].match)
		}
	}
	walk(r.base)
	for _, name := range names {
		if e := r.policies[name]; e != nil {
			walk(&e.contributor)
		}
	}
	r.built, r.banded = true, r.big > 0
	sortByKey(flows, matches)
	flows, err := splitBands(flows)
	return Delta{Full: flows}, err
}

// isBig reports whether merged flow f makes its rule table take priority
// bands.
func isBig(f of.Flow) bool {
	return len(f.Actions) > conjunctionsPerBand && slices.ContainsFunc(ruleTables, func(t of.Table) bool { return isBanded(f, t) })
}

// updateBase renders the flows that are not policies' and replaces them
// when they differ from the last ones.
func (r *Incremental) updateBase(st State, dirty map[flowKey]dirtyKey) {
	flows := appendBaseFlows(PipelineFlows(), st)
	if r.base != nil && len(r.base.flows) == len(flows) {
		same := true
		for i := range flows {
			if flows[i].String() != r.base.flows[i].String() {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	if r.base != nil {
		r.remove(r.base, dirty)
	}
	r.base = &contributor{flows: flows}
	r.add(r.base, dirty)
}

// updatePolicies renders again the policies whose inputs changed, and
// forgets the removed ones. It returns the names of st's policies, sorted.
func (r *Incremental) updatePolicies(st State, ids ConjIDs, dirty map[flowKey]dirtyKey) []string {
	ns := st.Policy
	if ns == nil {
		ns = &cp.NodeState{}
	}
	atgSame := map[string]bool{}
	agSame := map[string]bool{}
	groupsSame := func(pol *cp.NetworkPolicy) bool {
		for _, g := range pol.AppliedToGroups {
			same, ok := atgSame[g]
			if !ok {
				same = sameGroup(r.atg[g], ns.AppliedToGroups[g])
				atgSame[g] = same
			}
			if !same {
				return false
			}
		}
		for _, rule := range pol.Rules {
			for _, peer := range []cp.Peer{rule.From, rule.To} {
				for _, g := range peer.AddressGroups {
					same, ok := agSame[g]
					if !ok {
						same = sameAddressGroup(r.ag[g], ns.AddressGroups[g])
						agSame[g] = same
					}
					if !same {
						return false
					}
				}
			}
		}
		return true
	}

	// The flows of the policies rendered now share one array, sized for
	// all of them the first time.
	var pool []of.Flow
	if !r.built {
		pool = make([]of.Flow, 0, estimatePolicyFlows(ns, len(st.Pods)))
	}
	names := make([]string, 0, len(ns.Policies))
	for n := range ns.Policies {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		pol := ns.Policies[name]
		targets := appliedTo(ns, pol, st.Pods)
		old := r.policies[name]
		if old != nil && old.reusable(pol, targets, groupsSame, ids) {
			old.pol = pol
			continue
		}
		if old != nil {
			r.remove(&old.contributor, dirty)
			delete(r.policies, name)
		}
		if len(targets) == 0 {
			continue
		}
		e := &policyEntry{contributor: contributor{isPolicy: true, name: name}, pol: pol}
		for _, t := range targets {
			e.targets = append(e.targets, targetRef{ofPort: t.OFPort, namespace: t.PodNamespace, name: t.PodName})
		}
		start := len(pool)
		pool = appendOnePolicyFlows(pool, ns, pol, targets, func(key string) uint32 {
			id := ids(key)
			e.units = append(e.units, key)
			e.ids = append(e.ids, id)
			return id
		})
		e.flows = pool[start:len(pool):len(pool)]
		r.policies[name] = e
		r.add(&e.contributor, dirty)
	}
	for name, e := range r.policies {
		if _, ok := ns.Policies[name]; !ok {
			r.remove(&e.contributor, dirty)
			delete(r.policies, name)
		}
	}
	r.atg, r.ag = ns.AppliedToGroups, ns.AddressGroups
	return names
}

// reusable reports whether e's flows are what the policy renders now: the
// same policy, groups and targets, and the same ids for its units (asked
// for in Render's order; only when the rest is the same, so the keys are
// those Render asks for).
func (e *policyEntry) reusable(pol *cp.NetworkPolicy, targets []interfacestore.PodInterface, groupsSame func(*cp.NetworkPolicy) bool, ids ConjIDs) bool {
	if len(targets) != len(e.targets) || len(targets) == 0 {
		return false
	}
	for i, t := range targets {
		if (targetRef{ofPort: t.OFPort, namespace: t.PodNamespace, name: t.PodName}) != e.targets[i] {
			return false
		}
	}
	if pol != e.pol && !samePolicy(pol, e.pol) {
		return false
	}
	if !groupsSame(pol) {
		return false
	}
	for i, k := range e.units {
		if ids(k) != e.ids[i] {
			return false
		}
	}
	return true
}

// add merges c's flows into the table, noting the keys in dirty (if not
// nil).
func (r *Incremental) add(c *contributor, dirty map[flowKey]dirtyKey) {
	c.keys = make([]flowKey, len(c.flows))
	c.entries = make([]*entry, len(c.flows))
	var buf []byte
	for i := range c.flows {
		f := &c.flows[i]
		buf = f.Match.AppendTo(buf[:0])
		k := flowKey{table: f.Table.ID, priority: f.Priority, match: string(buf)}
		c.keys[i] = k
		e := r.entries[k]
		switch {
		case e != nil:
		case dirty == nil:
			// The first Update's entries come from slabs: most live as
			// long as the table, and a slab is freed with its last entry.
			if len(r.slab) == 0 {
				r.slab = make([]entry, 1024)
			}
			e, r.slab = &r.slab[0], r.slab[1:]
			r.entries[k] = e
		default:
			e = &entry{}
			r.entries[k] = e
		}
		if _, ok := dirty[k]; !ok && dirty != nil {
			dirty[k] = dirtyKey{was: len(e.from) > 0, flow: f}
		}
		c.entries[i] = e
		x := contribution{c: c, i: i}
		if n := len(e.from); n > 0 && x.compare(e.from[n-1]) < 0 {
			e.unsorted = true
		}
		e.from = append(e.from, x)
	}
}

// remove takes c's flows out of the table, noting the keys in dirty (if
// not nil).
func (r *Incremental) remove(c *contributor, dirty map[flowKey]dirtyKey) {
	for i, k := range c.keys {
		e := c.entries[i]
		if _, ok := dirty[k]; !ok && dirty != nil {
			dirty[k] = dirtyKey{was: true, flow: &c.flows[i]}
		}
		e.from = slices.DeleteFunc(e.from, func(x contribution) bool { return x.c == c })
	}
}

// fold merges the entry's flows as merge does, in Render's order. It
// reports false when there are none.
func (e *entry) fold() (of.Flow, bool) {
	if e.unsorted {
		slices.SortFunc(e.from, contribution.compare)
		e.unsorted = false
	}
	return fold(e.from)
}

// fold merges flows of one key as merge does, in the order given. It
// reports false when there are none.
func fold(from []contribution) (of.Flow, bool) {
	if len(from) == 0 {
		return of.Flow{}, false
	}
	cur := from[0].c.flows[from[0].i]
	conj := conjunctionsOnly(cur.Actions)
	owned := false
	for _, x := range from[1:] {
		f := &x.c.flows[x.i]
		fConj := conjunctionsOnly(f.Actions)
		switch {
		case conj && fConj:
			if !owned {
				cur.Actions = slices.Clone(cur.Actions)
				owned = true
			}
			cur.Actions = append(cur.Actions, f.Actions...)
			cur.Cookie = min(cur.Cookie, f.Cookie)
		case f.Cookie < cur.Cookie:
			cur, conj, owned = *f, fConj, false
		}
	}
	if conj && len(cur.Actions) > 1 {
		if !owned {
			cur.Actions = slices.Clone(cur.Actions)
		}
		sortConjunctions(cur.Actions)
	}
	return cur, true
}

// sameGroup and sameAddressGroup compare what the flows use of a group.
func sameGroup(a, b *cp.AppliedToGroup) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || slices.EqualFunc(a.Members, b.Members, sameMember)
}

func sameAddressGroup(a, b *cp.AddressGroup) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || slices.EqualFunc(a.Members, b.Members, sameMember)
}

func sameMember(a, b cp.GroupMember) bool {
	return a.Pod == b.Pod && a.Node == b.Node && slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports)
}

// samePolicy compares what the flows use of a policy.
func samePolicy(a, b *cp.NetworkPolicy) bool {
	return a.Name == b.Name && slices.Equal(a.AppliedToGroups, b.AppliedToGroups) &&
		slices.Equal(a.PolicyTypes, b.PolicyTypes) && slices.EqualFunc(a.Rules, b.Rules, sameRule)
}

func sameRule(a, b cp.Rule) bool {
	return a.Direction == b.Direction && samePeer(a.From, b.From) && samePeer(a.To, b.To) && slices.Equal(a.Services, b.Services)
}

func samePeer(a, b cp.Peer) bool {
	return slices.Equal(a.AddressGroups, b.AddressGroups) && slices.EqualFunc(a.IPBlocks, b.IPBlocks, func(x, y cp.IPBlock) bool {
		return x.CIDR == y.CIDR && slices.Equal(x.Except, y.Except)
	})
}
