// Package yamls holds Palisade's deployment files: base/ (the manifest's
// templates), conf/ (the components' configuration files, shipped in the
// palisade-config ConfigMap) and the rendered palisade.yml. Go code reads
// the shipped configuration through Conf, so that the lab runs the
// components with the files a deployment gets.
package yamls

import "embed"

// Conf holds conf/palisade-agent.conf and conf/palisade-controller.conf as
// they were when the program was built.
//
//go:embed conf/palisade-agent.conf conf/palisade-controller.conf
var Conf embed.FS

// Manifest is palisade.yml as it was when the program was built: the lab
// applies its ServiceAccounts and RBAC and runs the components with those
// accounts' tokens.
//
//go:embed palisade.yml
var Manifest []byte
