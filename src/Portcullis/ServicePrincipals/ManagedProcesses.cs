using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;
using Portcullis.Auth;

namespace Portcullis.ServicePrincipals;

/// <summary>The state of one managed service, as <c>GET /api/v1/managed-services</c> shows it.</summary>
public sealed record ManagedServiceState(string Name, string State, int? Pid, int Restarts, int? LastExitCode, DateTime? StartedAt, DateTime? NextStartAt);

/// <summary>
/// Runs the services that have a <c>command</c> (docs/services.md): started with their environment, output
/// logged line by line under their name, restarted when they exit with a backoff from 1 s doubling
/// to 60 s (back to 1 s after a minute of running), stopped with SIGTERM then SIGKILL when Portcullis
/// stops, to its whole process group (each leads its own, through <c>setsid</c>). So that no service
/// outlives a <c>kill -9</c> of Portcullis, each is started through <c>setpriv --pdeathsig KILL</c> from one
/// dedicated thread that lives as long as the process (the kernel sends the signal when the thread that
/// forked the child ends, so a pool thread would not do).
/// </summary>
internal sealed partial class ManagedProcesses(
    IOptions<ServicesOptions> options, ServiceSync sync, PublicUrl publicUrl,
    TimeProvider time, ILogger<ManagedProcesses> logger) : BackgroundService
{
    public static readonly TimeSpan MinBackoff = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(5);

    private sealed class Runner
    {
        public required ServiceDefinition Definition;
        public Process? Process;
        public string State = "starting";
        public int Restarts;
        public int? LastExitCode;
        public DateTime? StartedAt;
        public DateTime? NextStartAt;
    }

    private readonly ConcurrentDictionary<string, Runner> _runners = new(StringComparer.Ordinal);
    private readonly BlockingCollection<(ProcessStartInfo Info, TaskCompletionSource<Process> Started)> _launches = new();
    private Thread? _launcher;

    public IReadOnlyList<ManagedServiceState> States =>
        _runners.Values.OrderBy(r => r.Definition.Name, StringComparer.Ordinal).Select(r => new ManagedServiceState(
            r.Definition.Name!, r.State, r.Process is { HasExited: false } p ? p.Id : null, r.Restarts, r.LastExitCode, r.StartedAt, r.NextStartAt)).ToList();

    /// <summary>Started after the server is ready, so the service can call it at once.</summary>
    public void Begin(CancellationToken stopping)
    {
        var managed = options.Value.Services.Where(s => s.Command is not null).ToList();
        if (managed.Count == 0)
            return;
        _launcher = new Thread(LaunchLoop) { IsBackground = true, Name = "managed-service launcher" };
        _launcher.Start();
        foreach (var service in managed)
        {
            var runner = new Runner { Definition = service };
            _runners[service.Name!] = runner;
            _ = Task.Run(() => SuperviseAsync(runner, stopping), CancellationToken.None);
        }
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.CompletedTask;

    private void LaunchLoop()
    {
        foreach (var (info, started) in _launches.GetConsumingEnumerable())
        {
            try
            {
                started.SetResult(Process.Start(info)!);
            }
            catch (Exception e)
            {
                started.SetException(e);
            }
        }
    }

    private async Task SuperviseAsync(Runner runner, CancellationToken stopping)
    {
        var name = runner.Definition.Name!;
        var backoff = MinBackoff;
        while (!stopping.IsCancellationRequested)
        {
            Process process;
            try
            {
                var launch = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
                _launches.Add((StartInfo(runner.Definition), launch), stopping);
                process = await launch.Task;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogError("Service {Service} could not be started: {Error}", name, e.Message);
                runner.State = "failed to start";
                runner.LastExitCode = null;
                if (!await WaitAsync(runner, backoff, stopping))
                    break;
                backoff = Next(backoff);
                runner.Restarts++;
                continue;
            }
            catch (OperationCanceledException)
            {
                break;
            }

            runner.Process = process;
            runner.State = "running";
            runner.StartedAt = time.GetUtcNow().UtcDateTime;
            runner.NextStartAt = null;
            LogServiceStarted(name, process.Id);
            // A service that prints its own token must not put it in Portcullis's log.
            var token = sync.ProcessTokens.GetValueOrDefault(name);
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) LogServiceOutput(name, Mask(e.Data, token)); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) LogServiceOutput(name, Mask(e.Data, token)); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            try
            {
                await process.WaitForExitAsync(stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            runner.LastExitCode = process.ExitCode;
            var ran = time.GetUtcNow().UtcDateTime - runner.StartedAt.Value;
            logger.LogWarning("Service {Service} exited with code {Code} after {Seconds:0.0} s; restarting in {Backoff} s",
                name, process.ExitCode, ran.TotalSeconds, (ran > MaxBackoff ? MinBackoff : backoff).TotalSeconds);
            process.Dispose();
            runner.Process = null;
            // A service that ran for a while before failing starts again quickly; one that keeps failing waits longer and longer.
            if (ran > MaxBackoff)
                backoff = MinBackoff;
            if (!await WaitAsync(runner, backoff, stopping))
                break;
            backoff = Next(backoff);
            runner.Restarts++;
        }
        runner.State = "stopped";
    }

    private static string Mask(string line, string? token) =>
        token is { Length: > 0 } && line.Contains(token, StringComparison.Ordinal) ? line.Replace(token, "[token]", StringComparison.Ordinal) : line;

    private static TimeSpan Next(TimeSpan backoff) => backoff * 2 > MaxBackoff ? MaxBackoff : backoff * 2;

    private async Task<bool> WaitAsync(Runner runner, TimeSpan delay, CancellationToken stopping)
    {
        runner.State = "backoff";
        runner.NextStartAt = time.GetUtcNow().UtcDateTime + delay;
        try
        {
            await Task.Delay(delay, time, stopping);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private ProcessStartInfo StartInfo(ServiceDefinition service)
    {
        // setpriv (util-linux) sets the parent-death signal and then runs the command itself.
        var info = new ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = service.WorkingDirectory ?? Environment.CurrentDirectory,
        };
        // setsid: the service leads a process group of its own, so stopping it reaches its children too.
        foreach (var arg in (string[])["--pdeathsig", "KILL", "--", "setsid", "--", .. service.Command!])
            info.ArgumentList.Add(arg);
        // Nothing of Portcullis's own configuration is inherited (it may hold the database password).
        foreach (var key in info.Environment.Keys.Where(k => k.StartsWith("PORTCULLIS_", StringComparison.OrdinalIgnoreCase)).ToList())
            info.Environment.Remove(key);
        if (service.Environment is { } environment)
        {
            foreach (var (key, value) in environment)
                info.Environment[key] = value;
        }
        var api = publicUrl.Value;
        info.Environment["PORTCULLIS_API_TOKEN"] = sync.ProcessTokens.GetValueOrDefault(service.Name!, "");
        info.Environment["PORTCULLIS_API_URL"] = api + "/api/v1";
        info.Environment["PORTCULLIS_URL"] = api;
        info.Environment["PORTCULLIS_SERVICE_NAME"] = service.Name!;
        info.Environment["PORTCULLIS_SERVICE_URL"] = service.Url ?? "";
        return info;
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        var running = _runners.Values.Select(r => r.Process).OfType<Process>().Where(p => !p.HasExited).ToList();
        // The negative pid addresses the service's whole process group (see setsid above).
        foreach (var p in running)
            _ = Kill(-p.Id, SigTerm);
        var deadline = time.GetUtcNow() + StopGrace;
        foreach (var p in running)
        {
            var left = deadline - time.GetUtcNow();
            if (left > TimeSpan.Zero && !p.WaitForExit(left))
                logger.LogWarning("Service process {Pid} did not stop within {Seconds} s of SIGTERM; killing it", p.Id, StopGrace.TotalSeconds);
            _ = Kill(-p.Id, SigKill); // whatever is left of the group, the leader included
        }
        _launches.CompleteAdding();
    }

    private const int SigTerm = 15;
    private const int SigKill = 9;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [LoggerMessage(Level = LogLevel.Information, Message = "Service {Service} started (pid {Pid})")]
    private partial void LogServiceStarted(string service, int pid);

    [LoggerMessage(Level = LogLevel.Information, Message = "[{Service}] {Line}")]
    private partial void LogServiceOutput(string service, string line);
}
