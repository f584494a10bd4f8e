package controller

import (
	"context"
	"errors"
	"fmt"
	"net"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apiserver"
	"palisade.dev/palisade/controller/networkpolicy"
)

// Run runs the controller until ctx is done: informers, the NetworkPolicy
// controller and the agent-facing API server.
func Run(ctx context.Context, o *Options) error {
	logger := klog.FromContext(ctx)
	config, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	config.UserAgent = "palisade-controller"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	npController, err := networkpolicy.NewController(factory.Core().V1().Pods(), factory.Core().V1().Namespaces(),
		factory.Networking().V1().NetworkPolicies(), store)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Address())
	if err != nil {
		return fmt.Errorf("listening for agents: %w", err)
	}
	logger.Info("Serving the agent-facing API", "address", ln.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	errs := make(chan error, 2)
	go func() { errs <- npController.Run(ctx) }()
	go func() { errs <- apiserver.Serve(ctx, ln, apiserver.NewHandler(ctx, store, apiserver.AllowAll{})) }()
	// Whichever ends first ends the other.
	first := <-errs
	cancel()
	return errors.Join(first, <-errs)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		config, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (use --kubeconfig outside a cluster): %w", err)
		}
		return config, nil
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	return config, nil
}
