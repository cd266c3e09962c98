"The lab: a synthetic world whose truth is known (shapes, probes, a decoder), the demo and the explorer. It uses the core; the core never imports it."
