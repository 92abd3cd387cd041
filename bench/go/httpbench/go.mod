module slipstream/bench/httpbench

go 1.19
