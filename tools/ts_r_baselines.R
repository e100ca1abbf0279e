#!/usr/bin/env Rscript
# ets / auto.arima on the same chronological split as `rwkv7 ts eval` (70/10/20, every window of
# the test part with stride `--stride`, MSE/MAE on the series z-scored with the training part's
# mean and standard deviation), for reference beside docs/time-series.md. Not used by CI.
# Needs Debian's r-base-core and r-cran-forecast. Untested here: R was not installed on the
# machine this was written on.
#
#   Rscript tools/ts_r_baselines.R FILE.csv COLUMN LOOKBACK HORIZON FREQUENCY [STRIDE]
#   e.g. Rscript tools/ts_r_baselines.R ../shared/data/timeseries/sunspot_monthly.csv value 264 12 12 12
suppressPackageStartupMessages(library(forecast))
a <- commandArgs(trailingOnly = TRUE)
if (length(a) < 5) stop("usage: FILE.csv COLUMN LOOKBACK HORIZON FREQUENCY [STRIDE]")
d <- read.csv(a[1])
x <- d[[a[2]]]
if (is.null(x)) stop(paste0(a[1], ": no column ", a[2]))
x <- approx(seq_along(x), x, xout = seq_along(x), rule = 2)$y  # gaps: linear, as rwkv7 does
L <- as.integer(a[3]); H <- as.integer(a[4]); f <- as.numeric(a[5])
stride <- if (length(a) >= 6) as.integer(a[6]) else 1L
n <- length(x); train_end <- floor(n * 0.7); val_end <- train_end + floor(n * 0.1)
z <- (x - mean(x[1:train_end])) / (sqrt(mean((x[1:train_end] - mean(x[1:train_end]))^2)))
res <- list()
for (method in c("ets", "auto.arima")) {
  se <- c(); ae <- c()
  # windows: input z[(t-L+1):t], target z[(t+1):(t+H)], target inside the test part (1-based)
  for (t in seq(max(val_end, L), n - H, by = stride)) {
    y <- ts(z[(t - L + 1):t], frequency = f)
    fit <- if (method == "ets") ets(y) else auto.arima(y)
    p <- as.numeric(forecast(fit, h = H)$mean)
    e <- p - z[(t + 1):(t + H)]
    se <- c(se, e^2); ae <- c(ae, abs(e))
  }
  cat(sprintf("%s %s h=%d: mse %.4f mae %.4f (%d windows)\n", method, a[1], H, mean(se), mean(ae),
              length(se) / H))
}
