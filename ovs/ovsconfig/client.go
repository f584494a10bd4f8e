package ovsconfig

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/ovs/ovsconfig/vswitchd"
)

// Rows Palisade creates (the bridge, its Flow_Table rows, ports) carry
// OwnerKey=OwnerValue in external_ids.
const (
	OwnerKey   = "palisade-owner"
	OwnerValue = "palisade"
)

// Timeouts applied on top of the caller's context.
const (
	// connectTimeout bounds each (re)connection attempt.
	connectTimeout = 10 * time.Second
	// applyTimeout bounds the wait for ovs-vswitchd to apply a change and,
	// for CreatePort, to assign the ofport.
	applyTimeout = 30 * time.Second
	pollInterval = 20 * time.Millisecond
)

// Client implements BridgeConfig for one bridge with libovsdb. It keeps a
// cache of the Open_vSwitch, Bridge, Port, Interface and Flow_Table tables
// and reconnects (re-establishing the cache) if ovsdb-server restarts.
type Client struct {
	ovs          client.Client
	bridge       string
	datapathType string
}

var _ BridgeConfig = (*Client)(nil)

// New connects to the OVSDB server at endpoint (e.g. "unix:/run/x/db.sock")
// to manage bridge, created with datapathType ("netdev" for the userspace
// datapath, "" for OVS's default).
func New(ctx context.Context, endpoint, bridge, datapathType string) (*Client, error) {
	if bridge == "" {
		return nil, errors.New("ovsconfig: bridge name is empty")
	}
	dbModel, err := model.NewClientDBModel("Open_vSwitch", map[string]model.Model{
		"Open_vSwitch": &vswitchd.OpenvSwitch{},
		"Bridge":       &vswitchd.Bridge{},
		"Port":         &vswitchd.Port{},
		"Interface":    &vswitchd.Interface{},
		"Flow_Table":   &vswitchd.FlowTable{},
	})
	if err != nil {
		return nil, fmt.Errorf("ovsconfig: database model: %w", err)
	}
	logger := klog.FromContext(ctx).WithName("ovsdb")
	retry := backoff.NewExponentialBackOff()
	retry.MaxElapsedTime = 0 // keep reconnecting for the client's lifetime
	ovs, err := client.NewOVSDBClient(dbModel,
		client.WithEndpoint(endpoint),
		client.WithReconnect(connectTimeout, retry),
		client.WithLogger(&logger))
	if err != nil {
		return nil, fmt.Errorf("ovsconfig: %w", err)
	}
	if err := ovs.Connect(ctx); err != nil {
		return nil, fmt.Errorf("ovsconfig: connect to %s: %w", endpoint, err)
	}
	if _, err := ovs.Monitor(ctx, ovs.NewMonitor(
		client.WithTable(&vswitchd.OpenvSwitch{}),
		client.WithTable(&vswitchd.Bridge{}),
		client.WithTable(&vswitchd.Port{}),
		client.WithTable(&vswitchd.Interface{}),
		client.WithTable(&vswitchd.FlowTable{}),
	)); err != nil {
		ovs.Close()
		return nil, fmt.Errorf("ovsconfig: monitor %s: %w", endpoint, err)
	}
	return &Client{ovs: ovs, bridge: bridge, datapathType: datapathType}, nil
}

// Close disconnects from OVSDB.
func (c *Client) Close() { c.ovs.Close() }

// EnsureBridge creates the bridge, with its internal port of the same name,
// if it is missing; an existing bridge gets datapath_type, protocols,
// fail_mode and the owner mark set if they differ. It returns once
// ovs-vswitchd has applied the change, so the bridge's OpenFlow management
// socket exists.
func (c *Client) EnsureBridge(ctx context.Context) error {
	secure := vswitchd.BridgeFailModeSecure
	want := vswitchd.Bridge{
		Name:         c.bridge,
		DatapathType: c.datapathType,
		FailMode:     &secure,
		Protocols:    []vswitchd.BridgeProtocols{vswitchd.BridgeProtocolsOpenflow15},
		ExternalIDs:  map[string]string{OwnerKey: OwnerValue},
	}
	br, err := c.getBridge(ctx)
	switch {
	case errors.Is(err, client.ErrNotFound):
		return c.createBridge(ctx, want)
	case err != nil:
		return err
	}
	if br.DatapathType == want.DatapathType && br.FailMode != nil && *br.FailMode == secure &&
		slices.Contains(br.Protocols, vswitchd.BridgeProtocolsOpenflow15) && br.ExternalIDs[OwnerKey] == OwnerValue {
		return nil
	}
	update := *br
	update.DatapathType, update.FailMode = want.DatapathType, want.FailMode
	if !slices.Contains(update.Protocols, vswitchd.BridgeProtocolsOpenflow15) {
		update.Protocols = append(slices.Clone(update.Protocols), vswitchd.BridgeProtocolsOpenflow15)
	}
	update.ExternalIDs = maps.Clone(br.ExternalIDs)
	if update.ExternalIDs == nil {
		update.ExternalIDs = map[string]string{}
	}
	update.ExternalIDs[OwnerKey] = OwnerValue
	ops, err := c.ovs.Where(&update).Update(&update, &update.DatapathType, &update.FailMode, &update.Protocols, &update.ExternalIDs)
	if err != nil {
		return fmt.Errorf("ovsconfig: update bridge %s: %w", c.bridge, err)
	}
	klog.FromContext(ctx).Info("Updating bridge settings", "bridge", c.bridge)
	return c.transactAndWait(ctx, "update bridge "+c.bridge, ops)
}

func (c *Client) createBridge(ctx context.Context, br vswitchd.Bridge) error {
	iface := vswitchd.Interface{UUID: "new_iface", Name: c.bridge, Type: "internal"}
	port := vswitchd.Port{UUID: "new_port", Name: c.bridge, Interfaces: []string{iface.UUID}}
	br.UUID = "new_bridge"
	br.Ports = []string{port.UUID}
	ops, err := c.create(&iface, &port, &br)
	if err != nil {
		return fmt.Errorf("ovsconfig: create bridge %s: %w", c.bridge, err)
	}
	root, err := c.root(ctx)
	if err != nil {
		return err
	}
	link, err := c.ovs.Where(root).Mutate(root, model.Mutation{
		Field: &root.Bridges, Mutator: ovsdb.MutateOperationInsert, Value: []string{br.UUID},
	})
	if err != nil {
		return fmt.Errorf("ovsconfig: create bridge %s: %w", c.bridge, err)
	}
	klog.FromContext(ctx).Info("Creating bridge", "bridge", c.bridge, "datapathType", c.datapathType)
	return c.transactAndWait(ctx, "create bridge "+c.bridge, append(ops, link...))
}

// tableName is what ovs-ofctl accepts as a table name: not a number, no
// characters of its flow syntax.
var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// SetTableNames names the bridge's flow tables (ids 0..254) in one
// transaction; tables not in names lose their names.
func (c *Client) SetTableNames(ctx context.Context, names map[uint8]string) error {
	seen := map[string]uint8{}
	for id, name := range names {
		if id == 255 {
			return fmt.Errorf("ovsconfig: table id 255 is not a flow table")
		}
		if !tableName.MatchString(name) {
			return fmt.Errorf("ovsconfig: invalid name %q for table %d: want a letter followed by letters, digits, '_' or '-'", name, id)
		}
		if other, dup := seen[name]; dup {
			return fmt.Errorf("ovsconfig: tables %d and %d are both named %q", other, id, name)
		}
		seen[name] = id
	}
	br, err := c.getBridge(ctx)
	if err != nil {
		return err
	}
	current := map[uint8]string{}
	for id, uuid := range br.FlowTables {
		ft := &vswitchd.FlowTable{UUID: uuid}
		if err := c.ovs.Get(ctx, ft); err == nil && ft.Name != nil {
			current[uint8(id)] = *ft.Name
		}
	}
	if maps.Equal(current, names) && len(br.FlowTables) == len(names) {
		return nil
	}
	var rows []model.Model
	tables := map[int]string{}
	for id, name := range names {
		ft := &vswitchd.FlowTable{
			UUID:        fmt.Sprintf("new_table_%d", id),
			Name:        &name,
			ExternalIDs: map[string]string{OwnerKey: OwnerValue},
		}
		rows = append(rows, ft)
		tables[int(id)] = ft.UUID
	}
	ops, err := c.create(rows...)
	if err != nil {
		return fmt.Errorf("ovsconfig: set table names: %w", err)
	}
	update := *br
	update.FlowTables = tables
	set, err := c.ovs.Where(&update).Update(&update, &update.FlowTables)
	if err != nil {
		return fmt.Errorf("ovsconfig: set table names: %w", err)
	}
	// ovsdb-server garbage-collects the Flow_Table rows no longer referenced.
	ops = append(ops, set...)
	return c.transactAndWait(ctx, "set table names of "+c.bridge, ops)
}

// CreatePort adds a port with one interface to the bridge and waits until
// ovs-vswitchd assigned its ofport. The port's external_ids are
// externalIDs plus the owner mark unless externalIDs sets OwnerKey. If OVS
// reports an error for the interface, the port is removed again and the
// error returned. An existing port of the same name on the bridge is
// returned as it is.
func (c *Client) CreatePort(ctx context.Context, name, ifType string, externalIDs map[string]string) (Port, error) {
	existing, err := c.lookupPort(ctx, name)
	if err != nil {
		return Port{}, err
	}
	if existing != nil {
		return c.waitOFPort(ctx, name, existing.UUID, 0)
	}
	return c.createPort(ctx, PortSpec{Name: name, Type: ifType, ExternalIDs: externalIDs})
}

// PortSpec describes a port with one interface for EnsurePort.
type PortSpec struct {
	Name string
	// Type is the interface type: "" for a system device, "internal",
	// "geneve", "vxlan", ...
	Type string
	// Options are the interface's options, e.g. remote_ip=flow for a
	// flow-based tunnel.
	Options map[string]string
	// MAC, if set, is the interface's MAC address (Interface.mac; OVS
	// applies it to internal ports).
	MAC string
	// ExternalIDs mark the port; the owner mark is added unless set.
	ExternalIDs map[string]string
}

// EnsurePort makes the bridge have the port as spec describes it: it
// creates the port, or updates the type, options and MAC of an existing
// port of that name on the bridge (and its external IDs) when they differ,
// and returns once ovs-vswitchd gave the interface an ofport. It is what
// the agent uses for its own gateway and tunnel ports, whose settings must
// survive restarts unchanged.
func (c *Client) EnsurePort(ctx context.Context, spec PortSpec) (Port, error) {
	existing, err := c.lookupPort(ctx, spec.Name)
	if err != nil {
		return Port{}, err
	}
	if existing == nil {
		return c.createPort(ctx, spec)
	}
	if len(existing.Interfaces) != 1 {
		return Port{}, fmt.Errorf("ovsconfig: port %s has %d interfaces, want 1", spec.Name, len(existing.Interfaces))
	}
	iface := &vswitchd.Interface{UUID: existing.Interfaces[0]}
	if err := c.ovs.Get(ctx, iface); err != nil {
		return Port{}, fmt.Errorf("ovsconfig: interface of port %s: %w", spec.Name, err)
	}
	ids := withOwner(spec.ExternalIDs)
	var mac *string
	if spec.MAC != "" {
		mac = &spec.MAC
	}
	sameMAC := (mac == nil && iface.MAC == nil) || (mac != nil && iface.MAC != nil && *mac == *iface.MAC)
	if iface.Type == spec.Type && maps.Equal(iface.Options, spec.Options) && sameMAC && maps.Equal(existing.ExternalIDs, ids) {
		return c.waitOFPort(ctx, spec.Name, existing.UUID, 0)
	}
	newIface := *iface
	newIface.Type, newIface.Options, newIface.MAC = spec.Type, spec.Options, mac
	if newIface.Options == nil {
		newIface.Options = map[string]string{}
	}
	ops, err := c.ovs.Where(&newIface).Update(&newIface, &newIface.Type, &newIface.Options, &newIface.MAC)
	if err != nil {
		return Port{}, fmt.Errorf("ovsconfig: update port %s: %w", spec.Name, err)
	}
	newPort := *existing
	newPort.ExternalIDs = ids
	portOps, err := c.ovs.Where(&newPort).Update(&newPort, &newPort.ExternalIDs)
	if err != nil {
		return Port{}, fmt.Errorf("ovsconfig: update port %s: %w", spec.Name, err)
	}
	_, cfg, err := c.transact(ctx, "update port "+spec.Name, append(ops, portOps...))
	if err != nil {
		return Port{}, err
	}
	klog.FromContext(ctx).Info("Updated port", "port", spec.Name, "type", spec.Type, "options", spec.Options)
	return c.waitOFPort(ctx, spec.Name, existing.UUID, cfg)
}

// lookupPort returns the bridge's port of that name, nil if there is
// none, and an error if it belongs to another bridge.
func (c *Client) lookupPort(ctx context.Context, name string) (*vswitchd.Port, error) {
	if name == "" {
		return nil, errors.New("ovsconfig: port name is empty")
	}
	br, err := c.getBridge(ctx)
	if err != nil {
		return nil, err
	}
	existing := &vswitchd.Port{Name: name}
	switch err := c.ovs.Get(ctx, existing); {
	case err == nil:
		if !slices.Contains(br.Ports, existing.UUID) {
			return nil, fmt.Errorf("ovsconfig: port %s exists on another bridge", name)
		}
		return existing, nil
	case errors.Is(err, client.ErrNotFound):
		return nil, nil
	default:
		return nil, fmt.Errorf("ovsconfig: look up port %s: %w", name, err)
	}
}

func withOwner(externalIDs map[string]string) map[string]string {
	ids := maps.Clone(externalIDs)
	if ids == nil {
		ids = map[string]string{}
	}
	if _, ok := ids[OwnerKey]; !ok {
		ids[OwnerKey] = OwnerValue
	}
	return ids
}

func (c *Client) createPort(ctx context.Context, spec PortSpec) (Port, error) {
	name, ifType := spec.Name, spec.Type
	br, err := c.getBridge(ctx)
	if err != nil {
		return Port{}, err
	}
	ids := withOwner(spec.ExternalIDs)
	iface := vswitchd.Interface{UUID: "new_iface", Name: name, Type: ifType, Options: spec.Options}
	if spec.MAC != "" {
		iface.MAC = &spec.MAC
	}
	port := vswitchd.Port{UUID: "new_port", Name: name, Interfaces: []string{iface.UUID}, ExternalIDs: ids}
	ops, err := c.create(&iface, &port)
	if err != nil {
		return Port{}, fmt.Errorf("ovsconfig: create port %s: %w", name, err)
	}
	link, err := c.ovs.Where(br).Mutate(br, model.Mutation{
		Field: &br.Ports, Mutator: ovsdb.MutateOperationInsert, Value: []string{port.UUID},
	})
	if err != nil {
		return Port{}, fmt.Errorf("ovsconfig: create port %s: %w", name, err)
	}
	ops = append(ops, link...)
	results, cfg, err := c.transact(ctx, "create port "+name, ops)
	if err != nil {
		return Port{}, err
	}
	klog.FromContext(ctx).V(2).Info("Created port", "port", name, "type", ifType)
	p, err := c.waitOFPort(ctx, name, results[1].UUID.GoUUID, cfg)
	if err != nil {
		// Leave no half-created port behind.
		if delErr := c.DeletePort(ctx, name); delErr != nil {
			return Port{}, errors.Join(err, delErr)
		}
		return Port{}, err
	}
	return p, nil
}

// waitOFPort waits until ovs-vswitchd applied configuration cfg and gave
// the port's interface an ofport, or reported an error for it.
func (c *Client) waitOFPort(ctx context.Context, name, portUUID string, cfg int) (Port, error) {
	var result Port
	var ifaceErr string
	err := c.poll(ctx, func() (bool, error) {
		if applied, err := c.applied(ctx, cfg); err != nil || !applied {
			return false, err
		}
		p := &vswitchd.Port{UUID: portUUID}
		if err := c.ovs.Get(ctx, p); err != nil {
			return false, nil // not in the cache yet
		}
		if len(p.Interfaces) != 1 {
			return false, fmt.Errorf("ovsconfig: port %s has %d interfaces, want 1", p.Name, len(p.Interfaces))
		}
		iface := &vswitchd.Interface{UUID: p.Interfaces[0]}
		if err := c.ovs.Get(ctx, iface); err != nil {
			return false, nil
		}
		if iface.Error != nil && *iface.Error != "" {
			ifaceErr = *iface.Error
			return true, nil
		}
		if iface.Ofport == nil || *iface.Ofport <= 0 {
			return false, nil
		}
		result = Port{Name: p.Name, OFPort: int32(*iface.Ofport), ExternalIDs: p.ExternalIDs}
		return true, nil
	})
	if err != nil {
		return Port{}, fmt.Errorf("ovsconfig: wait for the ofport of port %s: %w", name, err)
	}
	if ifaceErr != "" {
		return Port{}, fmt.Errorf("ovsconfig: OVS could not add port %s: %s", name, ifaceErr)
	}
	return result, nil
}

// DeletePort removes the port and its interface from the bridge and waits
// until ovs-vswitchd applied that. A missing port is not an error.
func (c *Client) DeletePort(ctx context.Context, name string) error {
	br, err := c.getBridge(ctx)
	if err != nil {
		return err
	}
	port := &vswitchd.Port{Name: name}
	switch err := c.ovs.Get(ctx, port); {
	case errors.Is(err, client.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("ovsconfig: look up port %s: %w", name, err)
	}
	if !slices.Contains(br.Ports, port.UUID) {
		return fmt.Errorf("ovsconfig: port %s belongs to another bridge", name)
	}
	ops, err := c.ovs.Where(br).Mutate(br, model.Mutation{
		Field: &br.Ports, Mutator: ovsdb.MutateOperationDelete, Value: []string{port.UUID},
	})
	if err != nil {
		return fmt.Errorf("ovsconfig: delete port %s: %w", name, err)
	}
	del, err := c.ovs.Where(port).Delete()
	if err != nil {
		return fmt.Errorf("ovsconfig: delete port %s: %w", name, err)
	}
	ops = append(ops, del...)
	for _, uuid := range port.Interfaces {
		del, err := c.ovs.Where(&vswitchd.Interface{UUID: uuid}).Delete()
		if err != nil {
			return fmt.Errorf("ovsconfig: delete port %s: %w", name, err)
		}
		ops = append(ops, del...)
	}
	klog.FromContext(ctx).V(2).Info("Deleting port", "port", name)
	return c.transactAndWait(ctx, "delete port "+name, ops)
}

// ListPorts returns the bridge's ports whose external_ids contain every
// pair of match, sorted by name. A port whose ofport is not assigned yet
// has OFPort 0 (-1 if OVS failed to add it).
func (c *Client) ListPorts(ctx context.Context, match map[string]string) ([]Port, error) {
	br, err := c.getBridge(ctx)
	if err != nil {
		return nil, err
	}
	var ports []Port
	for _, uuid := range br.Ports {
		p := &vswitchd.Port{UUID: uuid}
		if err := c.ovs.Get(ctx, p); err != nil {
			return nil, fmt.Errorf("ovsconfig: port %s of bridge %s: %w", uuid, c.bridge, err)
		}
		if !containsAll(p.ExternalIDs, match) {
			continue
		}
		port := Port{Name: p.Name, ExternalIDs: p.ExternalIDs}
		if len(p.Interfaces) > 0 {
			iface := &vswitchd.Interface{UUID: p.Interfaces[0]}
			if err := c.ovs.Get(ctx, iface); err == nil && iface.Ofport != nil {
				port.OFPort = int32(*iface.Ofport)
			}
		}
		ports = append(ports, port)
	}
	slices.SortFunc(ports, func(a, b Port) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return ports, nil
}

func containsAll(m, sub map[string]string) bool {
	for k, v := range sub {
		if got, ok := m[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// create returns insert operations for rows of different tables (libovsdb's
// Create takes rows of one table only).
func (c *Client) create(rows ...model.Model) ([]ovsdb.Operation, error) {
	var ops []ovsdb.Operation
	for _, row := range rows {
		op, err := c.ovs.Create(row)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op...)
	}
	return ops, nil
}

// getBridge returns the bridge row from the cache.
func (c *Client) getBridge(ctx context.Context) (*vswitchd.Bridge, error) {
	br := &vswitchd.Bridge{Name: c.bridge}
	if err := c.ovs.Get(ctx, br); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("ovsconfig: bridge %s: %w", c.bridge, err)
		}
		return nil, fmt.Errorf("ovsconfig: look up bridge %s: %w", c.bridge, err)
	}
	return br, nil
}

// root returns the Open_vSwitch table's single row.
func (c *Client) root(ctx context.Context) (*vswitchd.OpenvSwitch, error) {
	var rows []vswitchd.OpenvSwitch
	if err := c.ovs.List(ctx, &rows); err != nil {
		return nil, fmt.Errorf("ovsconfig: read Open_vSwitch table: %w", err)
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("ovsconfig: Open_vSwitch table has %d rows, want 1 (was the database initialized with ovs-vsctl init?)", len(rows))
	}
	return &rows[0], nil
}

// transact runs ops in one transaction together with an increment of
// Open_vSwitch.next_cfg, and returns the operations' results and the new
// next_cfg, which ovs-vswitchd copies to cur_cfg once it applied the
// transaction.
func (c *Client) transact(ctx context.Context, what string, ops []ovsdb.Operation) ([]ovsdb.OperationResult, int, error) {
	root, err := c.root(ctx)
	if err != nil {
		return nil, 0, err
	}
	bump, err := c.ovs.Where(root).Mutate(root, model.Mutation{
		Field: &root.NextCfg, Mutator: ovsdb.MutateOperationAdd, Value: 1,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("ovsconfig: %s: %w", what, err)
	}
	all := append(slices.Clone(ops), bump...)
	all = append(all, ovsdb.Operation{
		Op:      ovsdb.OperationSelect,
		Table:   "Open_vSwitch",
		Where:   []ovsdb.Condition{ovsdb.NewCondition("_uuid", ovsdb.ConditionEqual, ovsdb.UUID{GoUUID: root.UUID})},
		Columns: []string{"next_cfg"},
	})
	results, err := c.ovs.Transact(ctx, all...)
	if err != nil {
		return nil, 0, fmt.Errorf("ovsconfig: %s: %w", what, err)
	}
	if opErrs, err := ovsdb.CheckOperationResults(results, all); err != nil {
		return nil, 0, fmt.Errorf("ovsconfig: %s: %w %v", what, err, opErrs)
	}
	sel := results[len(all)-1]
	if len(sel.Rows) != 1 {
		return nil, 0, fmt.Errorf("ovsconfig: %s: reading next_cfg returned %d rows", what, len(sel.Rows))
	}
	var cfg int
	switch v := sel.Rows[0]["next_cfg"].(type) {
	case float64:
		cfg = int(v)
	case int:
		cfg = v
	default:
		return nil, 0, fmt.Errorf("ovsconfig: %s: next_cfg is %T", what, v)
	}
	return results, cfg, nil
}

// transactAndWait runs transact and waits until ovs-vswitchd applied it.
func (c *Client) transactAndWait(ctx context.Context, what string, ops []ovsdb.Operation) error {
	_, cfg, err := c.transact(ctx, what, ops)
	if err != nil {
		return err
	}
	if err := c.poll(ctx, func() (bool, error) { return c.applied(ctx, cfg) }); err != nil {
		return fmt.Errorf("ovsconfig: %s: ovs-vswitchd did not apply the change: %w", what, err)
	}
	return nil
}

// applied reports whether ovs-vswitchd applied configuration cfg.
func (c *Client) applied(ctx context.Context, cfg int) (bool, error) {
	root, err := c.root(ctx)
	if err != nil {
		return false, err
	}
	return root.CurCfg >= cfg, nil
}

// poll calls cond until it returns true or an error, ctx ends, or
// applyTimeout passes.
func (c *Client) poll(ctx context.Context, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// BridgeExternalID returns the value of key in the bridge's external_ids
// ("" if it is not set).
func (c *Client) BridgeExternalID(ctx context.Context, key string) (string, error) {
	br, err := c.getBridge(ctx)
	if err != nil {
		return "", err
	}
	return br.ExternalIDs[key], nil
}

// SetBridgeExternalID sets key to value in the bridge's external_ids,
// keeping the other keys.
func (c *Client) SetBridgeExternalID(ctx context.Context, key, value string) error {
	br, err := c.getBridge(ctx)
	if err != nil {
		return err
	}
	if v, ok := br.ExternalIDs[key]; ok && v == value {
		return nil
	}
	update := *br
	update.ExternalIDs = maps.Clone(br.ExternalIDs)
	if update.ExternalIDs == nil {
		update.ExternalIDs = map[string]string{}
	}
	update.ExternalIDs[key] = value
	ops, err := c.ovs.Where(&update).Update(&update, &update.ExternalIDs)
	if err != nil {
		return fmt.Errorf("ovsconfig: set external_ids:%s of bridge %s: %w", key, c.bridge, err)
	}
	return c.transactAndWait(ctx, fmt.Sprintf("set external_ids:%s of bridge %s", key, c.bridge), ops)
}

// flowRestoreWait is the Open_vSwitch other_config key that keeps a
// starting ovs-vswitchd from forwarding until its flows are restored.
const flowRestoreWait = "flow-restore-wait"

// ClearFlowRestoreWait removes other_config:flow-restore-wait, letting
// ovs-vswitchd forward again; call it once the flows are installed. It
// does nothing when the key is not set.
func (c *Client) ClearFlowRestoreWait(ctx context.Context) (bool, error) {
	root, err := c.root(ctx)
	if err != nil {
		return false, err
	}
	if _, ok := root.OtherConfig[flowRestoreWait]; !ok {
		return false, nil
	}
	ops, err := c.ovs.Where(root).Mutate(root, model.Mutation{
		Field: &root.OtherConfig, Mutator: ovsdb.MutateOperationDelete, Value: []string{flowRestoreWait},
	})
	if err != nil {
		return false, fmt.Errorf("ovsconfig: clear %s: %w", flowRestoreWait, err)
	}
	return true, c.transactAndWait(ctx, "clear "+flowRestoreWait, ops)
}
