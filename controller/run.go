package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	"palisade.dev/palisade/controller/certificate"
	"palisade.dev/palisade/controller/networkpolicy"
)

// Run runs the controller until ctx is done: informers, the NetworkPolicy
// controller and the agent-facing API server (TLS, with the CA published
// for agents; agents authenticated by TokenReview).
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

	tlsConfig, caPEM, err := serving(o)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
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
	logger.Info("Serving the agent-facing API over TLS", "address", ln.Addr().String(), "hosts", o.servingHosts(),
		"agentServiceAccount", o.AgentServiceAccount)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	errs := make(chan error, 3)
	go func() { errs <- publishCA(ctx, client, caPEM) }()
	go func() { errs <- npController.Run(ctx) }()
	go func() { errs <- apiserver.Serve(ctx, ln, tlsConfig, apiserver.NewHandler(ctx, store, auth)) }()
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
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, ca.PEM, nil
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
