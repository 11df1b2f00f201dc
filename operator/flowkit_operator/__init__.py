"""The FlowKit Kubernetes operator: FlowTask and FlowWorkerPool resources, over the engine's coordinator."""
