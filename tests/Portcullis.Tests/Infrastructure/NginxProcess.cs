namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// The real nginx (Debian package <c>nginx</c>) in the foreground, with a private prefix directory:
/// its own pid file, logs and temporary paths, so nothing of the system's nginx is touched. The test
/// gives the contents of the <c>http { }</c> block.
/// </summary>
public sealed class NginxProcess : ProxyProcess
{
    private NginxProcess(string directory) : base(directory) { }

    public string ErrorLog => File.Exists(Path.Combine(Directory, "error.log")) ? File.ReadAllText(Path.Combine(Directory, "error.log")) : "";

    protected override string Diagnostics() => ErrorLog;

    /// <param name="http">The inside of the <c>http</c> block: upstreams and servers.</param>
    /// <param name="port">The loopback port the config listens on; nginx is ready when it accepts.</param>
    public static async Task<NginxProcess> StartAsync(string http, int port)
    {
        var nginx = Find("nginx", "/usr/sbin/nginx", "/usr/bin/nginx");
        var dir = System.IO.Directory.CreateTempSubdirectory("portcullis-nginx-").FullName;
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
        var process = new NginxProcess(dir);
        await process.StartAsync(nginx, ["-p", dir, "-c", Path.Combine(dir, "nginx.conf"), "-e", Path.Combine(dir, "error.log")], port, config);
        return process;
    }
}
