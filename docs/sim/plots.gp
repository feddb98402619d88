# shoal-sim plots: run `gnuplot plots.gp` in this folder.
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 960,540 font 'sans,10'
} else {
  set terminal png size 960,540
}
set datafile separator ','
set key outside right top
set grid
set xlabel 'simulated time (s)'

set output 'membership.png'
set title 'Membership: live members seen by each running node'
set ylabel 'members'
plot 'timeseries.csv' using 1:2 skip 1 with lines lw 2 title 'running nodes', \
     '' using 1:3 skip 1 with lines title 'seen (mean)', \
     '' using 1:4 skip 1 with lines title 'seen (min)', \
     '' using 1:5 skip 1 with lines title 'seen (max)'

set output 'failures.png'
set title 'Failure detector events per second'
set ylabel 'events / s'
set yrange [0:*]
set offsets 0, 0, 1, 0
plot 'timeseries.csv' using 1:7 skip 1 with impulses lw 2 title 'suspicions', \
     '' using 1:($10 > 0 ? $10 : NaN) skip 1 with points pt 7 ps 1.5 title 'failures detected', \
     '' using 1:($8 > 0 ? $8 : NaN) skip 1 with points pt 2 ps 1.5 title 'false suspicions', \
     '' using 1:($9 > 0 ? $9 : NaN) skip 1 with points pt 6 ps 1.5 title 'false deaths'
set offsets 0, 0, 0, 0

set output 'hit_ratio.png'
set title 'Cache hit ratio per second'
set ylabel 'hits / reads'
set yrange [0:1.05]
plot 'timeseries.csv' using 1:12 skip 1 with lines lw 2 title 'Shoal', \
     '' using 1:13 skip 1 with lines lw 2 title 'independent caches'
set yrange [*:*]

set output 's3_requests.png'
set title 'S3 GET requests per second'
set ylabel 'GETs / s'
set logscale y
plot 'timeseries.csv' using 1:($14 > 0 ? $14 : NaN) skip 1 with lines lw 2 title 'Shoal', \
     '' using 1:($15 > 0 ? $15 : NaN) skip 1 with lines lw 2 title 'independent caches', \
     '' using 1:($16 > 0 ? $16 : NaN) skip 1 with lines lw 2 title 'no cache'
unset logscale y

set output 'churn_moves.png'
set title 'Data whose owner changed (churn)'
set ylabel 'MiB / s'
set y2label 'running nodes'
set y2tics
plot 'timeseries.csv' using 1:($21 / 1048576) skip 1 with impulses lw 2 title 'bytes moved', \
     '' using 1:2 skip 1 axes x1y2 with lines title 'running nodes (right)'
unset y2tics
unset y2label

set output 'cost.png'
set title 'Cost per epoch (S3 GETs + egress + PUTs)'
set xlabel 'epoch'
set ylabel 'USD'
set style data histograms
set style histogram clustered
set style fill solid 0.8
set boxwidth 0.9
set logscale y
plot '< grep ,shoal, epochs.csv' using 12:xtic(1) title 'Shoal', \
     '< grep ,independent, epochs.csv' using 12 title 'independent caches', \
     '< grep ,nocache, epochs.csv' using 12 title 'no cache'
