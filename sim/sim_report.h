/*
 * sim_report: what shoal-sim prints and writes from a finished model run: the summary table,
 * summary.json, the CSV time series and the gnuplot plots. Nothing here reads a clock, so the
 * files are a function of the run alone (same seed, same bytes); the caller prints timings.
 */
#ifndef SHOAL_SIM_REPORT_H
#define SHOAL_SIM_REPORT_H

#include "sim_model.h"

#include <stdbool.h>
#include <stdio.h>

/* Derived figures of a run, also what the tests assert on. */
typedef struct sim_summary {
    double s3_gets[SIM_SYSTEMS], s3_bytes[SIM_SYSTEMS], s3_503[SIM_SYSTEMS];
    double s3_heads[SIM_SYSTEMS], s3_lists[SIM_SYSTEMS], xzone_bytes[SIM_SYSTEMS], peer_bytes[SIM_SYSTEMS];
    double dollars[SIM_SYSTEMS];      /* whole run: requests + egress + cross-zone traffic + PUTs */
    double saved_vs_nocache[SIM_SYSTEMS], saved_pct_vs_nocache[SIM_SYSTEMS]; /* dollars; % of no cache's */
    double saved_vs_indep, saved_pct_vs_indep; /* Shoal against the independent caches */
    double epoch_usd[SIM_SYSTEMS];    /* one warm epoch (the mean of epochs 2.., else epoch 1) */
    double epochs_per_day, month_usd[SIM_SYSTEMS]; /* 30 days at epochs_per_day warm epochs */
    double wall_mean_s[SIM_SYSTEMS], stall_max[SIM_SYSTEMS];
    bool sustained[SIM_SYSTEMS];      /* every epoch kept the job's pace (no stall) */
    sim_limit worst_limit[SIM_SYSTEMS];
    double hit_ratio[SIM_SYSTEMS];
    double lat_p50[SIM_SYSTEMS], lat_p99[SIM_SYSTEMS]; /* seconds */
    double msgs_per_node_period;
    size_t victims, victims_probed, victims_all_dead;
    double mean_probe_periods;        /* SWIM's first-detection figure; e/(e-1) ideally */
    double mean_first_suspect_s, mean_first_dead_s, mean_all_dead_periods, max_all_dead_periods;
    uint64_t false_suspicions, false_deaths, moved_blocks, moved_bytes;
    double join_move_ratio;           /* moved / ideal over joins; 0 when none */
} sim_summary;

/* Computes the derived figures. */
void sim_summary_compute(const sim_model *m, sim_summary *out);

/* Prints the human summary table. */
void sim_report_print(const sim_model *m, const sim_summary *s, FILE *f);

/* Writes summary.json, timeseries.csv, epochs.csv, detections.csv and latency.csv into `dir`
 * (created if missing). -1 with SHOAL_ERR_IO naming the file on failure. */
int sim_report_write(const sim_model *m, const sim_summary *s, const char *dir);

/* Writes plots.gp into `dir` and runs gnuplot on it there, producing PNGs (pngcairo when the
 * installed gnuplot has it, else png): only the plots that have something to show, churn events
 * marked. gnuplot's own messages go to plots.log, not the terminal. -1 with SHOAL_ERR_IO when
 * gnuplot cannot be run or fails. */
int sim_report_plot(const sim_model *m, const char *dir);

/* Writes report.md into `dir`: the run on one page (configuration, savings, epoch times, failure
 * detection) with the PNGs that sim_report_plot wrote (`plots` false: none). */
int sim_report_page(const sim_model *m, const sim_summary *s, const char *dir, bool plots);

/* "the job's pace", "NIC", "S3 connections", "S3 request rate" (static). */
const char *sim_limit_name(sim_limit l);

#endif
