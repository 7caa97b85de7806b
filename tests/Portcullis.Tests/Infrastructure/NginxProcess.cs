using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// The real nginx (Debian package <c>nginx</c>) in the foreground, with a private prefix directory:
/// its own pid file, logs and temporary paths, so nothing of the system's nginx is touched. The test
/// gives the contents of the <c>http { }</c> block.
/// </summary>
public sealed class NginxProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _dir;
    private readonly StringBuilder _output = new();

    private NginxProcess(Process process, string dir)
    {
        _process = process;
        _dir = dir;
    }

    public string ErrorLog => File.Exists(Path.Combine(_dir, "error.log")) ? File.ReadAllText(Path.Combine(_dir, "error.log")) : "";

    /// <param name="http">The inside of the <c>http</c> block: upstreams and servers.</param>
    /// <param name="port">The loopback port the config listens on; nginx is ready when it accepts.</param>
    public static async Task<NginxProcess> StartAsync(string http, int port)
    {
        var nginx = new[] { "/usr/sbin/nginx", "/usr/bin/nginx" }.FirstOrDefault(File.Exists);
        if (nginx is null)
            Assert.Fail("nginx is missing. Install the Debian package 'nginx' (test.sh does).");
        var dir = Directory.CreateTempSubdirectory("portcullis-nginx-").FullName;
        var user = Environment.UserName == "root" ? "user root;\n" : "";
        var config = $$"""
            {{user}}daemon off;
            worker_processes 1;
            pid {{dir}}/nginx.pid;
            error_log {{dir}}/error.log warn;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path {{dir}}/body;
                proxy_temp_path {{dir}}/proxy;
                fastcgi_temp_path {{dir}}/fastcgi;
                uwsgi_temp_path {{dir}}/uwsgi;
                scgi_temp_path {{dir}}/scgi;
            {{http}}
            }
            """;
        await File.WriteAllTextAsync(Path.Combine(dir, "nginx.conf"), config);
        var psi = new ProcessStartInfo(nginx!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-p", dir, "-c", Path.Combine(dir, "nginx.conf"), "-e", Path.Combine(dir, "error.log") })
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        var result = new NginxProcess(process, dir);
        process.OutputDataReceived += (_, e) => { lock (result._output) result._output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (result._output) result._output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
                Assert.Fail($"nginx exited with {process.ExitCode}: {result._output}{result.ErrorLog}\nconfig:\n{config}");
            try
            {
                using var tcp = new TcpClient();
                await tcp.ConnectAsync("127.0.0.1", port);
                return result;
            }
            catch (SocketException)
            {
                await Task.Delay(20);
            }
        }
        Assert.Fail($"nginx did not listen on {port}: {result.ErrorLog}");
        return result;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
