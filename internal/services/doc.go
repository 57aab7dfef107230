// Package services is the step runner's way out: the registry of the services workflows may
// call, and the HTTP caller that calls them.
//
//	reg, err := services.LoadFile("services.yaml")          // --services
//	env, err := services.FromEnv(os.Environ())              // MEMMIE_SERVICE_<NAME>_URL
//	caller, err := services.NewCaller(services.Config{Registry: services.Merge(reg, env)})
//	res := caller.Call(ctx, services.Request{
//		Service: "studio", Method: "POST", Path: "/blobs/validate",
//		Body: input, IdempotencyKey: key, ExecutionID: id, StepID: "validate", Attempt: 1,
//	})
//	if res.ErrorKind != "" { ... } // res.Body is the decoded response
//
// A workflow reaches only registered services, and only by a path under the service's
// base_url: the caller never follows redirects and rejects anything but a clean absolute path.
//
// The caller reports what happened (status, body, kind of error, Retry-After) and never
// retries nor decides whether a failure is final: that belongs to the execution core.
package services
