package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	"palisade.dev/palisade/controller/certificate"
	"palisade.dev/palisade/controller/metrics"
	"palisade.dev/palisade/controller/networkpolicy"
)

// Run runs the controller until ctx is done: the metrics and health server
// and, once this replica leads (at once without leader election), the
// leader's work (see lead). A leader that loses the Lease returns an error,
// so that the process exits and restarts clean.
func Run(ctx context.Context, o *Options) error {
	config, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	config.UserAgent = "palisade-controller"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	dynClient, err := dynamic.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	var ready metrics.Readiness
	serverDone := make(chan error, 1)
	if o.MetricsBindAddress == "" {
		serverDone <- nil
	} else {
		ln, err := metrics.Listen(ctx, o.MetricsBindAddress)
		if err != nil {
			return err
		}
		cfg := metrics.ServerConfig{Registry: metrics.NewRegistry(storeCounts(store)), Ready: ready.Check, EnablePprof: o.EnablePprof}
		go func() {
			err := metrics.Serve(ctx, ln, cfg)
			if err != nil {
				cancel()
			}
			serverDone <- err
		}()
	}
	leading := func(ctx context.Context) error { return lead(ctx, o, client, dynClient, store, &ready) }
	if o.LeaderElect {
		err = elect(ctx, o, client, &ready, leading)
	} else {
		metrics.Leader.Set(1)
		ready.SetLeader()
		err = leading(ctx)
	}
	cancel()
	return errors.Join(err, <-serverDone)
}

// storeCounts reads the model's size for the metrics from the store.
func storeCounts(store *apiserver.Store) metrics.Source {
	return func() metrics.Counts {
		st := store.Stats()
		return metrics.Counts{Policies: st.Policies, AppliedToGroups: st.AppliedToGroups,
			AddressGroups: st.AddressGroups, ConnectedAgents: st.ConnectedNodes}
	}
}

// lead is the leader's work, until ctx is done: informers, the
// NetworkPolicy controller publishing into store, and the agent-facing API
// server (TLS, with the CA published for agents; agents authenticated by
// TokenReview). A standby does none of it: it does not even listen, so no
// agent can get a stale or empty model from it.
func lead(ctx context.Context, o *Options, client kubernetes.Interface, dynClient dynamic.Interface, store *apiserver.Store, ready *metrics.Readiness) error {
	logger := klog.FromContext(ctx)
	tlsConfig, caPEM, err := serving(o)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	npController, err := networkpolicy.NewController(factory.Core().V1().Pods(), factory.Core().V1().Namespaces(),
		factory.Networking().V1().NetworkPolicies(), store)
	if err != nil {
		return err
	}
	saNamespace, saName := o.agentServiceAccount()
	auth := apiserver.NewTokenAuthorizer(client.AuthenticationV1().TokenReviews(), saNamespace, saName, o.TokenReviewTTL)
	ln, err := net.Listen("tcp", o.Address())
	if err != nil {
		return fmt.Errorf("listening for agents: %w", err)
	}
	ready.SetListening()
	logger.Info("Serving the agent-facing API over TLS", "address", ln.Addr().String(), "hosts", o.servingHosts(),
		"agentServiceAccount", o.AgentServiceAccount)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	go func() {
		synced := func(context.Context) (bool, error) { return npController.HasSynced(), nil }
		if wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, synced) == nil {
			ready.SetSynced()
		}
	}()
	errs := make(chan error, 3)
	go func() { errs <- publishCA(ctx, client, caPEM) }()
	go func() { errs <- npController.Run(ctx) }()
	handler := newReadAPI(ctx, client, npController.State(), npController.HasSynced).Wrap(apiserver.NewHandler(ctx, store, auth))
	go func() { errs <- apiserver.Serve(ctx, ln, tlsConfig, handler) }()
	caSynced := make(chan struct{})
	go func() {
		defer close(caSynced)
		syncAPIServiceCA(ctx, dynClient, caPEM, apiServiceCheckInterval, apiServiceRetryInterval) // ends with ctx
	}()
	// Leadership ends only once this term's caBundle patches have stopped,
	// so that a late one cannot overwrite the next leader's CA.
	defer func() { cancel(); <-caSynced }()
	// The CA's publication ends early and well; anything else ending (or
	// failing) ends the rest.
	var all []error
	for range 3 {
		err := <-errs
		all = append(all, err)
		if err != nil || ctx.Err() != nil || len(all) > 1 {
			cancel()
		}
	}
	return errors.Join(all...)
}

// serving loads or creates the CA and makes the TLS configuration.
func serving(o *Options) (*tls.Config, []byte, error) {
	ca, err := certificate.LoadOrCreateCA(o.CertDir)
	if err != nil {
		return nil, nil, fmt.Errorf("the controller's CA: %w", err)
	}
	cert, err := ca.ServingCertificate(o.servingHosts())
	if err != nil {
		return nil, nil, err
	}
	// Client certificates are asked for but optional: agents present a
	// bearer token, kube-apiserver's front proxy (the read API) a
	// certificate that the read API verifies itself.
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}, ca.PEM, nil
}

// publishCA publishes the CA, retrying until it succeeds or ctx is done.
func publishCA(ctx context.Context, client kubernetes.Interface, caPEM []byte) error {
	logger := klog.FromContext(ctx)
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := certificate.PublishCA(ctx, client, caPEM); err != nil {
			logger.Error(err, "Publishing the CA failed; retrying")
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil // ctx done
	}
	logger.Info("Published the CA", "configMap", controlplane.CAConfigMapNamespace+"/"+controlplane.CAConfigMapName)
	return nil
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
